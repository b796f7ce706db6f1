//! `PgRegistry` against real PostgreSQL servers, each test its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use orgo_fleet::PgRegistry;
use orgo_fleet_testing::Postgres;
use orgo_snapshot::{LockMode, LockService as _, RefKey, RefService as _, StoreError};
use orgo_template::Digest;

fn key(text: &str) -> RefKey {
    RefKey::new(text).expect("key")
}

async fn registry(server: &Postgres) -> PgRegistry {
    PgRegistry::connect(&server.url()).await.expect("connect")
}

/// A plain client, for what the tests do behind the registry's back.
async fn admin(server: &Postgres) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .expect("connect the admin client");
    tokio::spawn(connection);
    client
}

/// The error and its sources, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_ref_race_has_one_winner() {
    let server = Postgres::start();
    let key = key("race/key");
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let url = server.url();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            // Each its own registry: its own connection, as separate hosts.
            let registry = PgRegistry::connect(&url).await.expect("connect");
            let mine = Digest::of(&[i]);
            (
                mine,
                registry.create_ref(&key, &mine).await.expect("create"),
            )
        }));
    }
    let mut winners = Vec::new();
    let mut seen = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (mine, None) => winners.push(mine),
            (mine, Some(existing)) => {
                assert_ne!(existing, mine);
                seen.push(existing);
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creator wins");
    assert!(seen.iter().all(|d| *d == winners[0]), "all see the winner");
    let stored = registry(&server).await.get_ref(&key).await.expect("get");
    assert_eq!(stored, Some(winners[0]));
}

#[tokio::test]
async fn refs_set_get_delete_list() {
    let server = Postgres::start();
    let registry = registry(&server).await;
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    let k = key("templates/ns/app/1.0.0");
    assert_eq!(registry.get_ref(&k).await.expect("get"), None);
    assert_eq!(registry.create_ref(&k, &a).await.expect("create"), None);
    assert_eq!(registry.create_ref(&k, &b).await.expect("create"), Some(a));
    assert_eq!(registry.get_ref(&k).await.expect("get"), Some(a));
    registry.set_ref(&k, &b).await.expect("set");
    assert_eq!(registry.get_ref(&k).await.expect("get"), Some(b));
    assert!(registry.delete_ref(&k).await.expect("delete"));
    assert!(!registry.delete_ref(&k).await.expect("delete"));
    assert_eq!(registry.get_ref(&k).await.expect("get"), None);
    // A ref can be created again once deleted.
    assert_eq!(registry.create_ref(&k, &a).await.expect("create"), None);
}

#[tokio::test]
async fn list_refs_is_by_segment_and_byte_order() {
    let server = Postgres::start();
    let registry = registry(&server).await;
    let d = Digest::of(b"d");
    let keys = [
        "a/b", "a/bc", // shares the string `a/b`, not the segment
        "a/b/z", "a/b/Z",  // uppercase sorts before lowercase in bytes
        "a/b/_x", // `_` is a LIKE wildcard
        "a/b/-", "a/b/x_y", "a/b/x.y", "a/b/xzy", // would match `x_y` as a LIKE pattern
        "a_b/c",   // `a_b` would match `a/b` as a LIKE pattern
        "a/b.c", "b",
    ];
    for k in keys {
        registry.set_ref(&key(k), &d).await.expect("set");
    }
    let listed: Vec<String> = registry
        .list_refs(&key("a/b"))
        .await
        .expect("list")
        .iter()
        .map(|k| k.to_string())
        .collect();
    let mut expected: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| *k == "a/b" || k.starts_with("a/b/"))
        .collect();
    expected.sort_unstable(); // byte order
    assert_eq!(listed, expected);
    assert_eq!(
        listed,
        [
            "a/b", "a/b/-", "a/b/Z", "a/b/_x", "a/b/x.y", "a/b/x_y", "a/b/xzy", "a/b/z"
        ]
    );
    let listed = registry.list_refs(&key("a/b/x_y")).await.expect("list");
    assert_eq!(listed, vec![key("a/b/x_y")], "`_` is no wildcard");
    let listed = registry.list_refs(&key("a_b")).await.expect("list");
    assert_eq!(listed, vec![key("a_b/c")]);
    assert!(
        registry
            .list_refs(&key("nothing"))
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn a_malformed_stored_digest_is_invalid() {
    let server = Postgres::start();
    let registry = registry(&server).await;
    admin(&server)
        .await
        .execute(
            "INSERT INTO orgo_refs (key, digest) VALUES ('bad/ref', 'md5:nope')",
            &[],
        )
        .await
        .expect("insert");
    let error = registry
        .get_ref(&key("bad/ref"))
        .await
        .expect_err("malformed");
    assert!(
        matches!(&error, StoreError::Invalid { what: "ref", location, .. } if location == "bad/ref"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_locks_exclude_across_registries() {
    let server = Postgres::start();
    let registries = [
        Arc::new(registry(&server).await),
        Arc::new(registry(&server).await),
    ];
    let name = key("builds/x");
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let registry = registries[i % 2].clone();
        let (name, inside) = (name.clone(), inside.clone());
        tasks.push(tokio::spawn(async move {
            let guard = registry
                .lock(&name, LockMode::Exclusive)
                .await
                .expect("lock");
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "one holder");
            tokio::time::sleep(Duration::from_millis(20)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
}

#[tokio::test]
async fn shared_locks_coexist_and_exclude_exclusive() {
    let server = Postgres::start();
    let (one, two) = (registry(&server).await, registry(&server).await);
    let name = key("builds/x");
    let a = one.lock(&name, LockMode::Shared).await.expect("lock");
    let b = two
        .lock(&name, LockMode::Shared)
        .await
        .expect("shared locks coexist");
    let exclusive = tokio::time::timeout(
        Duration::from_millis(300),
        two.lock(&name, LockMode::Exclusive),
    )
    .await;
    assert!(
        exclusive.is_err(),
        "an exclusive lock waits for shared holders"
    );
    // Another name is another lock.
    let _other = two
        .lock(&key("builds/y"), LockMode::Exclusive)
        .await
        .expect("lock");
    drop((a, b));
    let _held = tokio::time::timeout(
        Duration::from_secs(10),
        two.lock(&name, LockMode::Exclusive),
    )
    .await
    .expect("the exclusive lock once the shared holders left")
    .expect("lock");
}

#[tokio::test]
async fn a_dropped_guard_releases_its_lock() {
    let server = Postgres::start();
    let (one, two) = (registry(&server).await, registry(&server).await);
    let name = key("builds/x");
    let guard = one.lock(&name, LockMode::Exclusive).await.expect("lock");
    let waiter = tokio::spawn(async move {
        let guard = two.lock(&name, LockMode::Exclusive).await.expect("lock");
        (two, guard)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "the lock is held");
    drop(one); // the guard outlives its registry: the lock is still held
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the guard holds the lock, not the registry"
    );
    drop(guard);
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter gets the lock once the guard is dropped")
        .expect("task");
}

#[tokio::test]
async fn a_waiter_that_gives_up_leaves_no_trace() {
    let server = Postgres::start();
    let registry = registry(&server).await;
    let name = key("builds/x");
    let guard = registry.lock(&name, LockMode::Shared).await.expect("lock");
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        registry.lock(&name, LockMode::Exclusive),
    )
    .await;
    assert!(gave_up.is_err(), "the exclusive lock waits");
    // Its request is cancelled on the server: no exclusive waiter remains
    // queued, so a new shared lock is not held up behind it.
    let admin = admin(&server).await;
    let mut waiting = 1;
    for _ in 0..100 {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .await
            .expect("query");
        waiting = row.get::<_, i64>(0);
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(waiting, 0, "the abandoned request is gone");
    let _second = tokio::time::timeout(
        Duration::from_secs(5),
        registry.lock(&name, LockMode::Shared),
    )
    .await
    .expect("a shared lock is not queued behind an abandoned exclusive one")
    .expect("lock");
    drop(guard);
}

#[tokio::test]
async fn a_lock_whose_session_is_killed_is_released() {
    // As when the holder's host dies: its session ends on the server.
    let server = Postgres::start();
    let (one, two) = (registry(&server).await, registry(&server).await);
    let name = key("builds/x");
    let _dead = one.lock(&name, LockMode::Exclusive).await.expect("lock");
    let waiter = tokio::spawn(async move {
        let guard = two.lock(&name, LockMode::Exclusive).await.expect("lock");
        (two, guard)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "the lock is held");
    let killed = admin(&server)
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate the holder")
        .get::<_, i64>(0);
    assert_eq!(killed, 1);
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter gets the lock once the holder's session ended")
        .expect("task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_calls_then_the_registry_reconnects() {
    let mut server = Postgres::start();
    let registry = registry(&server).await;
    let (k, d) = (key("templates/a/b/1.0.0"), Digest::of(b"d"));
    registry.set_ref(&k, &d).await.expect("set");

    tokio::task::block_in_place(|| server.stop());
    let error = registry.get_ref(&k).await.expect_err("the server is down");
    let text = chain(&error);
    assert!(
        matches!(
            error,
            StoreError::Remote {
                service: "registry database",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!text.contains(server.password()), "{text}");
    assert!(!format!("{error:?}").contains(server.password()));
    assert!(!format!("{registry:?}").contains(server.password()));
    let error = registry
        .lock(&k, LockMode::Exclusive)
        .await
        .expect_err("the server is down");
    assert!(!chain(&error).contains(server.password()));
    assert!(
        chain(&error).contains("lock `templates/a/b/1.0.0`"),
        "{}",
        chain(&error)
    );

    tokio::task::block_in_place(|| server.restart());
    assert_eq!(registry.get_ref(&k).await.expect("reconnected"), Some(d));
    let _guard = registry.lock(&k, LockMode::Exclusive).await.expect("lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_calls_is_invisible() {
    let mut server = Postgres::start();
    let registry = registry(&server).await;
    let (k, d) = (key("templates/a/b/1.0.0"), Digest::of(b"d"));
    registry.set_ref(&k, &d).await.expect("set");
    tokio::task::block_in_place(|| server.restart());
    // The old connection died with the server; the next call connects again.
    assert_eq!(registry.get_ref(&k).await.expect("reconnected"), Some(d));
}

#[tokio::test]
async fn migrations_run_once_and_refuse_a_newer_schema() {
    let server = Postgres::start();
    let url = server.database("refs_db");
    let registry = PgRegistry::connect(&url).await.expect("connect");
    let (k, d) = (key("a"), Digest::of(b"d"));
    registry.set_ref(&k, &d).await.expect("set");
    let again = PgRegistry::connect(&url).await.expect("connect again");
    assert_eq!(again.get_ref(&k).await.expect("get"), Some(d), "data kept");

    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect the admin client");
    tokio::spawn(connection);
    let version: i64 = admin
        .query_one("SELECT version FROM orgo_schema", &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, 2);
    admin
        .execute("UPDATE orgo_schema SET version = 999", &[])
        .await
        .expect("update");
    let error = PgRegistry::connect(&url).await.expect_err("newer schema");
    let text = chain(&error);
    assert!(
        text.contains("schema is version 999, newer than version 2"),
        "{text}"
    );
    assert!(text.contains("upgrade orgo"), "{text}");
    assert!(!text.contains(server.password()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_migrating_at_once_take_turns() {
    let server = Postgres::start();
    let url = server.database("fresh");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            PgRegistry::connect(&url).await.expect("connect")
        }));
    }
    for task in tasks {
        let registry = task.await.expect("task");
        registry
            .set_ref(&key("k"), &Digest::of(b"d"))
            .await
            .expect("set");
    }
}

#[tokio::test]
async fn refs_not_set_within_their_time_to_live_expire_and_a_set_renews_one() {
    let server = Postgres::start();
    let registry = registry(&server).await;
    let digest = Digest::of(b"snapshot");
    for k in [
        "leases/c-gone",
        "leases/c-alive",
        "leasesx/c-other",
        "templates/a/b/1.0.0",
    ] {
        registry.set_ref(&key(k), &digest).await.expect("set");
    }
    // Two of them were last set an hour ago, behind the registry's back.
    admin(&server)
        .await
        .execute(
            "UPDATE orgo_refs SET set_at = now() - interval '1 hour'
             WHERE key IN ('leases/c-gone', 'leases/c-alive', 'leasesx/c-other', 'templates/a/b/1.0.0')",
            &[],
        )
        .await
        .expect("age the refs");
    // A live host sets its lease again.
    registry
        .set_ref(&key("leases/c-alive"), &digest)
        .await
        .expect("renew");

    let ttl = Duration::from_secs(30 * 60);
    let expired = registry
        .expire_refs(&key("leases"), ttl)
        .await
        .expect("expire");
    assert_eq!(expired, vec![key("leases/c-gone")], "only the stale lease");
    assert_eq!(
        registry.get_ref(&key("leases/c-gone")).await.expect("get"),
        None
    );
    for kept in ["leases/c-alive", "leasesx/c-other", "templates/a/b/1.0.0"] {
        assert_eq!(
            registry.get_ref(&key(kept)).await.expect("get"),
            Some(digest),
            "`{kept}` is kept: renewed, or not under the prefix"
        );
    }
    assert!(
        registry
            .expire_refs(&key("leases"), ttl)
            .await
            .expect("expire")
            .is_empty(),
        "nothing more"
    );
}
