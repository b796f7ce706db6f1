//! The CLI and `orgo serve` in a fleet (a real PostgreSQL and a real
//! s3s-fs, no VM):
//!
//! - a template published through one host's `orgo serve` resolves on
//!   another host, which has no server: the registry is the fleet's;
//! - `orgo store gc`: the leases no host renewed within their time to live
//!   are a gone host's, so they expire first, and what only they kept is
//!   collected; a renewed lease keeps its snapshot.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Output, Stdio};

use orgo_fleet::FleetStore;
use orgo_fleet_testing::Fleet;
use orgo_snapshot::{
    BlobInfo, BlobService as _, HardwareShape, Manifest, RefKey, RefService as _, SnapshotManifest,
    put_manifest,
};
use orgo_template::Digest;

fn key(text: &str) -> RefKey {
    RefKey::new(text).expect("a valid key")
}

/// A snapshot manifest holding one blob of `bytes`, stored; its digest and
/// the blob's.
async fn snapshot(fleet: &FleetStore, bytes: &[u8]) -> (Digest, Digest) {
    let blob: BlobInfo = fleet.put(&mut &bytes[..]).await.expect("put");
    let manifest = SnapshotManifest {
        template: Digest::of(bytes),
        blobs: BTreeMap::from([("memory".to_owned(), blob)]),
        hardware: HardwareShape {
            cpu: 1,
            memory_mib: 256,
            disk_gb: 1,
        },
        backend: "qemu".to_owned(),
        base_image: Digest::of(b"no base image here"),
        kernel: Digest::of(b"no kernel here"),
        agent: None,
        parent: None,
        created_at: "2026-12-07T00:00:00Z".to_owned(),
    };
    let digest = put_manifest(fleet, &Manifest::Snapshot(manifest))
        .await
        .expect("put the manifest");
    (digest, blob.digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_expires_the_leases_of_gone_hosts_and_collects_what_only_they_kept() {
    let servers = Fleet::start();
    let fleet = servers.open().await;

    let (gone_snapshot, gone_blob) = snapshot(&fleet, b"a gone host's computer").await;
    let (alive_snapshot, alive_blob) = snapshot(&fleet, b"a live host's computer").await;
    fleet
        .set_ref(&key("leases/c-gone"), &gone_snapshot)
        .await
        .expect("lease");
    fleet
        .set_ref(&key("leases/c-alive"), &alive_snapshot)
        .await
        .expect("lease");
    // The gone host last renewed its lease two days ago.
    let (admin, connection) =
        tokio_postgres::connect(&servers.postgres.url(), tokio_postgres::NoTls)
            .await
            .expect("connect the admin client");
    tokio::spawn(connection);
    admin
        .execute(
            "UPDATE orgo_refs SET set_at = now() - interval '2 days' WHERE key = 'leases/c-gone'",
            &[],
        )
        .await
        .expect("age the lease");

    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_orgo"))
        .args(["store", "gc"])
        .env("ORGO_HOME", home.path())
        .envs(servers.env())
        .env_remove("ORGO_LEASE_TTL")
        .env_remove("ORGO_URL")
        .output()
        .expect("orgo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "orgo store gc failed: {stderr}");
    assert!(stdout.contains("expired 1 lease:"), "{stdout}");
    let secret = servers.s3.secret_key();
    assert!(!stderr.contains(secret) && !stdout.contains(secret));

    assert_eq!(
        fleet.get_ref(&key("leases/c-gone")).await.expect("get"),
        None
    );
    assert_eq!(
        fleet.get_ref(&key("leases/c-alive")).await.expect("get"),
        Some(alive_snapshot)
    );
    for (digest, kept) in [
        (gone_snapshot, false),
        (gone_blob, false),
        (alive_snapshot, true),
        (alive_blob, true),
    ] {
        assert_eq!(
            fleet.stat(&digest).await.expect("stat").is_some(),
            kept,
            "`{digest}` kept: {kept}; gc said: {stdout}"
        );
    }
}

/// `orgo ARGS` as a host of `fleet` with its home in `home`.
fn orgo(fleet: &Fleet, home: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orgo"));
    command
        .env("ORGO_HOME", home)
        .envs(fleet.env())
        .env_remove("ORGO_URL")
        .env_remove("ORGO_API_KEY");
    command
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

#[test]
fn a_template_published_through_one_hosts_server_resolves_on_another_host() {
    let fleet = Fleet::start();
    let (server_home, other_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = ok(
        &orgo(&fleet, server_home.path())
            .args(["keys", "create", "--namespace", "team"])
            .output()
            .unwrap(),
        "orgo keys create",
    );
    let mut server = orgo(&fleet, server_home.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-builds",
            "0",
            "--max-computers",
            "0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut address = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut address)
        .unwrap();

    let file = server_home.path().join("app.yaml");
    std::fs::write(&file, "api_version: orgo.ai/v1\nname: shared-app@1.0.0\n").unwrap();
    let published = orgo(&fleet, server_home.path())
        .env("ORGO_URL", format!("http://{}", address.trim()))
        .env("ORGO_API_KEY", key.trim())
        .args(["publish", file.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    ok(&published, "orgo publish through the server");

    // Another host, no server: the fleet's registry has it.
    let resolved = ok(
        &orgo(&fleet, other_home.path())
            .args(["resolve", "team/shared-app@1.0.0"])
            .output()
            .unwrap(),
        "orgo resolve on another host",
    );
    let template =
        orgo_template::Template::from_yaml("api_version: orgo.ai/v1\nname: shared-app@1.0.0\n")
            .unwrap();
    assert_eq!(resolved.trim(), template.digest().to_string());
    let listed = ok(
        &orgo(&fleet, other_home.path())
            .args(["templates"])
            .output()
            .unwrap(),
        "orgo templates on another host",
    );
    assert!(listed.contains("team/shared-app@1.0.0"), "{listed}");
}
