//! `orgo store gc` in a fleet (a real PostgreSQL and a real s3s-fs, no VM):
//! the leases no host renewed within their time to live are a gone host's,
//! so they expire first, and what only they kept is collected; a renewed
//! lease keeps its snapshot.

use std::collections::BTreeMap;
use std::process::Command;

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
