//! The conformance suite every backend must pass (feature `conformance`).
//!
//! A backend's test calls [`run`] with a factory of fresh, empty stores:
//!
//! ```
//! use std::sync::Arc;
//! use orgo_snapshot::MemoryStore;
//! use orgo_snapshot::conformance::{Subject, run};
//!
//! # async fn backend_test() {
//! run(|| async {
//!     let store = MemoryStore::new();
//!     let handle = store.clone();
//!     Subject::new(Arc::new(store), move |digest, bytes| {
//!         handle.corrupt(digest, bytes);
//!     })
//! })
//! .await;
//! # }
//! ```
#![allow(
    clippy::missing_panics_doc,
    reason = "test support: a failed check panics"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use orgo_template::{Digest, Name, Template};
use tokio::io::AsyncReadExt as _;

use crate::{
    BuildCache, BuildFailure, HardwareShape, LockMode, PutMode, RefKey, Registry,
    SnapshotArtifacts, Store, StoreError, gc, verify,
};

type CorruptFn = Box<dyn Fn(&Digest, Vec<u8>) + Send + Sync>;

/// A fresh store under test, and a way to damage a stored blob in place (as
/// a failing disk would) for the corruption checks.
pub struct Subject {
    /// The store.
    pub store: Arc<dyn Store>,
    corrupt: CorruptFn,
}

impl Subject {
    /// `corrupt(digest, bytes)` must replace the stored bytes of `digest`.
    pub fn new(
        store: Arc<dyn Store>,
        corrupt: impl Fn(&Digest, Vec<u8>) + Send + Sync + 'static,
    ) -> Self {
        Self {
            store,
            corrupt: Box::new(corrupt),
        }
    }
}

/// Runs every check, each on a fresh store from `make`; panics naming the
/// first check that fails.
pub async fn run<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Subject>,
{
    blobs_round_trip(make().await).await;
    blobs_stream_large(make().await).await;
    blobs_corruption_is_detected(make().await).await;
    blobs_from_files(make().await).await;
    refs_create_set_delete_list(make().await).await;
    locks_exclude(make().await).await;
    registry_publish_is_immutable(make().await).await;
    cache_builds_once(make().await).await;
    cache_records_failures(make().await).await;
    cache_forgets_only_a_stale_snapshot(make().await).await;
    gc_keeps_what_is_reachable(make().await).await;
    checkpoints_keep_their_parent(make().await).await;
    published_checkpoints_share_the_refs_of_templates(make().await).await;
    gc_during_builds(make().await).await;
}

async fn read_all(store: &dyn Store, digest: &Digest) -> Result<Vec<u8>, std::io::Error> {
    let mut reader = store.open(digest).await.expect("open").expect("stored");
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).await?;
    Ok(bytes)
}

async fn put(store: &dyn Store, bytes: &[u8]) -> Digest {
    let mut slice = bytes;
    let info = store.put(&mut slice).await.expect("put");
    assert_eq!(info.size, bytes.len() as u64, "put reports the size");
    assert_eq!(info.digest, Digest::of(bytes), "put reports the SHA-256");
    info.digest
}

async fn blobs_round_trip(s: Subject) {
    let store = &*s.store;
    let missing = Digest::of(b"missing");
    assert_eq!(
        store.stat(&missing).await.expect("stat"),
        None,
        "a miss is Ok(None)"
    );
    assert!(store.open(&missing).await.expect("open").is_none());
    assert!(!store.delete(&missing).await.expect("delete"));

    let empty = put(store, b"").await;
    let hello = put(store, b"hello").await;
    assert_eq!(
        put(store, b"hello").await,
        hello,
        "a second put is idempotent"
    );
    assert_eq!(store.stat(&hello).await.expect("stat"), Some(5));
    assert_eq!(read_all(store, &hello).await.expect("read"), b"hello");
    assert_eq!(read_all(store, &empty).await.expect("read"), b"");
    let listed: Vec<Digest> = store
        .list()
        .await
        .expect("list")
        .iter()
        .map(|b| b.digest)
        .collect();
    let mut expected = vec![empty, hello];
    expected.sort();
    assert_eq!(listed, expected, "list holds each blob once");
    assert!(store.delete(&hello).await.expect("delete"));
    assert_eq!(store.stat(&hello).await.expect("stat"), None);
}

async fn blobs_stream_large(s: Subject) {
    // 5 MiB + 3 of varied bytes: more than one chunk, not a multiple of one.
    let bytes: Vec<u8> = (0..5 * 1024 * 1024 + 3u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let digest = put(&*s.store, &bytes).await;
    assert!(read_all(&*s.store, &digest).await.expect("read") == bytes);
}

async fn blobs_corruption_is_detected(s: Subject) {
    let store = &*s.store;
    let digest = put(store, b"precious bytes").await;
    for damage in [
        b"precious bytez".to_vec(),
        b"precious".to_vec(),
        b"precious bytes!".to_vec(),
    ] {
        (s.corrupt)(&digest, damage);
        let err = read_all(store, &digest)
            .await
            .expect_err("corrupt data is not good data");
        let inner = err.into_inner().expect("an error with a cause");
        match inner.downcast::<StoreError>().map(|e| *e) {
            Ok(StoreError::Corrupt { digest: d, .. }) => assert_eq!(d, digest),
            other => panic!("expected StoreError::Corrupt, got {other:?}"),
        }
    }
    // A reader that failed stays failed: a second read is no clean end.
    let mut reader = store.open(&digest).await.expect("open").expect("stored");
    let mut sink = Vec::new();
    assert!(reader.read_to_end(&mut sink).await.is_err());
    assert!(
        reader.read_to_end(&mut sink).await.is_err(),
        "the failure is sticky"
    );
    let report = verify(store).await.expect("verify");
    assert_eq!(report.problems.len(), 1, "verify reports the corrupt blob");
    assert!(report.problems[0].subject.contains(&digest.hex()));
}

async fn blobs_from_files(s: Subject) {
    let store = &*s.store;
    let dir = tempfile::tempdir().expect("tempdir");
    let kept = dir.path().join("kept");
    tokio::fs::write(&kept, b"copied in").await.expect("write");
    let info = store
        .put_file(&kept, PutMode::Copy)
        .await
        .expect("put_file");
    assert_eq!(info.digest, Digest::of(b"copied in"));
    assert!(kept.exists(), "Copy leaves the source");
    let moved = dir.path().join("moved");
    tokio::fs::write(&moved, b"moved in").await.expect("write");
    let info = store
        .put_file(&moved, PutMode::Move)
        .await
        .expect("put_file");
    assert_eq!(
        info,
        crate::BlobInfo {
            digest: Digest::of(b"moved in"),
            size: 8
        }
    );
    assert!(!moved.exists(), "Move consumes the source");
    assert_eq!(
        read_all(store, &info.digest).await.expect("read"),
        b"moved in"
    );
    let missing = dir.path().join("missing");
    assert!(store.put_file(&missing, PutMode::Copy).await.is_err());
    // Nothing was left half-written, so there is nothing to clean up.
    assert_eq!(
        store.remove_incomplete().await.expect("remove_incomplete"),
        0
    );
}

async fn refs_create_set_delete_list(s: Subject) {
    let store = &*s.store;
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    let key = RefKey::new("templates/ns/app/1.0.0").expect("key");
    assert_eq!(store.get_ref(&key).await.expect("get"), None);
    assert_eq!(store.create_ref(&key, &a).await.expect("create"), None);
    assert_eq!(
        store.create_ref(&key, &b).await.expect("create"),
        Some(a),
        "create never replaces"
    );
    assert_eq!(store.get_ref(&key).await.expect("get"), Some(a));
    store.set_ref(&key, &b).await.expect("set");
    assert_eq!(store.get_ref(&key).await.expect("get"), Some(b));

    let sibling = RefKey::new("templates/nsx/app/1.0.0").expect("key");
    let deeper = RefKey::new("templates/ns/app/2.0.0-rc.1+build.5").expect("key");
    store.set_ref(&sibling, &a).await.expect("set");
    store.set_ref(&deeper, &a).await.expect("set");
    let ns = RefKey::new("templates/ns").expect("key");
    let listed = store.list_refs(&ns).await.expect("list");
    assert_eq!(
        listed,
        vec![key.clone(), deeper.clone()],
        "prefix is whole segments"
    );
    assert!(
        store
            .list_refs(&RefKey::new("nothing").expect("key"))
            .await
            .expect("list")
            .is_empty()
    );
    assert!(store.delete_ref(&key).await.expect("delete"));
    assert!(!store.delete_ref(&key).await.expect("delete"));
    assert_eq!(store.get_ref(&key).await.expect("get"), None);
    assert!(
        RefKey::new("a/../b").is_err() && RefKey::new("/a").is_err() && RefKey::new("a b").is_err()
    );

    // Many concurrent creators of one key: exactly one wins, all agree.
    let key = RefKey::new("race/key").expect("key");
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = s.store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mine = Digest::of(&[i]);
            (mine, store.create_ref(&key, &mine).await.expect("create"))
        }));
    }
    let mut winners = 0;
    for task in tasks {
        let (mine, outcome) = task.await.expect("task");
        match outcome {
            None => winners += 1,
            Some(existing) => assert_ne!(existing, mine),
        }
    }
    assert_eq!(winners, 1, "exactly one creator wins");
    assert!(store.get_ref(&key).await.expect("get").is_some());
}

async fn locks_exclude(s: Subject) {
    let name = RefKey::new("test/lock").expect("key");
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = s.store.clone();
        let (name, inside) = (name.clone(), inside.clone());
        tasks.push(tokio::spawn(async move {
            let _guard = store.lock(&name, LockMode::Exclusive).await.expect("lock");
            assert_eq!(
                inside.fetch_add(1, Ordering::SeqCst),
                0,
                "one exclusive holder"
            );
            tokio::task::yield_now().await;
            inside.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let a = s.store.lock(&name, LockMode::Shared).await.expect("lock");
    let b = s
        .store
        .lock(&name, LockMode::Shared)
        .await
        .expect("shared locks coexist");
    drop((a, b));
}

fn template(version: &str, greeting: &str) -> Template {
    Template::from_yaml(&format!(
        "api_version: orgo.ai/v1\nname: app@{version}\nenv: {{GREETING: \"{greeting}\"}}\n"
    ))
    .expect("a valid template")
}

async fn registry_publish_is_immutable(s: Subject) {
    let registry = Registry::new(s.store.clone());
    let ns = Name::new("team").expect("name");
    let one = template("1.0.0", "hello");
    let published = registry.publish(ns.clone(), &one).await.expect("publish");
    assert!(published.created);
    assert_eq!(published.digest, one.digest());
    assert_eq!(published.reference.to_string(), "team/app@1.0.0");
    assert!(
        !registry
            .publish(ns.clone(), &one)
            .await
            .expect("republish")
            .created
    );

    let changed = template("1.0.0", "bonjour");
    match registry.publish(ns.clone(), &changed).await {
        Err(StoreError::Immutable { existing, new, .. }) => {
            assert_eq!((existing, new), (one.digest(), changed.digest()));
        }
        other => panic!("expected Immutable, got {other:?}"),
    }
    let reference = "team/app@1.0.0".parse().expect("ref");
    let resolved = registry
        .resolve(&reference)
        .await
        .expect("resolve")
        .expect("found");
    assert_eq!(
        resolved.canonical_json(),
        one.canonical_json(),
        "the first publish stays"
    );

    registry
        .publish(ns.clone(), &template("1.1.0", "hi"))
        .await
        .expect("publish");
    registry
        .publish(Name::new("default").expect("name"), &one)
        .await
        .expect("publish");
    let listed: Vec<String> = registry
        .list(Some(&ns))
        .await
        .expect("list")
        .iter()
        .map(|(r, _)| r.to_string())
        .collect();
    assert_eq!(listed, ["team/app@1.0.0", "team/app@1.1.0"]);
    assert_eq!(registry.list(None).await.expect("list").len(), 3);
    assert!(
        registry
            .resolve(&"team/app@9.9.9".parse().expect("ref"))
            .await
            .expect("resolve")
            .is_none()
    );
    assert!(registry.delete(&reference).await.expect("delete"));
    assert!(
        registry
            .resolve(&reference)
            .await
            .expect("resolve")
            .is_none()
    );

    // Parallel publishers of one ref with different documents: one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let registry = registry.clone();
        let ns = ns.clone();
        tasks.push(tokio::spawn(async move {
            registry
                .publish(ns, &template("3.0.0", &format!("v{i}")))
                .await
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(p) => created += usize::from(p.created),
            Err(StoreError::Immutable { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(created, 1);
}

/// A build that writes its artifacts to fresh temp files.
/// A stored base image (a gc root) for the snapshots to name.
#[derive(Clone, Copy)]
struct Base {
    image: Digest,
    kernel: Digest,
}

async fn base_image(cache: &BuildCache, dir: &tempfile::TempDir) -> Base {
    let kernel = dir.path().join("vmlinuz");
    tokio::fs::write(&kernel, b"kernel")
        .await
        .expect("write kernel");
    let files = BTreeMap::from([("vmlinuz".to_owned(), kernel)]);
    let (image, manifest) = cache
        .put_base_image(&Digest::of(b"recipe"), &files)
        .await
        .expect("store a base image");
    Base {
        image,
        kernel: manifest.blobs["vmlinuz"].digest,
    }
}

async fn artifacts(
    dir: &tempfile::TempDir,
    base: Base,
    seed: String,
) -> Result<SnapshotArtifacts, BuildFailure> {
    let mut files = BTreeMap::new();
    for role in ["disk", "memory", "state"] {
        let path = dir.path().join(format!("{seed}-{role}"));
        tokio::fs::write(&path, format!("{role} of {seed}"))
            .await
            .expect("write artifact");
        files.insert(role.to_owned(), path);
    }
    Ok(SnapshotArtifacts {
        files,
        hardware: HardwareShape {
            cpu: 2,
            memory_mib: 4096,
            disk_gb: 10,
        },
        backend: "test".into(),
        base_image: base.image,
        kernel: base.kernel,
        agent: Some(Digest::of(b"agent")),
    })
}

async fn cache_builds_once(s: Subject) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = Arc::new(dir);
    let cache = BuildCache::new(s.store.clone());
    let base = base_image(&cache, &dir).await;
    let digest = template("1.0.0", "x").digest();
    assert!(cache.get(&digest).await.expect("get").is_none());
    let builds = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (cache, builds, dir) = (cache.clone(), builds.clone(), dir.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_build(&digest, || async move {
                    builds.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    artifacts(&dir, base, format!("build{i}")).await
                })
                .await
                .expect("build")
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    assert_eq!(
        builds.load(Ordering::SeqCst),
        1,
        "one build for eight callers"
    );
    assert_eq!(results.iter().filter(|b| b.built_here).count(), 1);
    assert!(
        results.iter().all(|b| b.digest == results[0].digest),
        "all get its result"
    );
    let manifest = &results[0].manifest;
    assert_eq!(manifest.template, digest);
    assert_eq!(manifest.blobs.len(), 3);
    for blob in manifest.blobs.values() {
        assert_eq!(
            s.store.stat(&blob.digest).await.expect("stat"),
            Some(blob.size)
        );
    }
    let hit = cache.get(&digest).await.expect("get").expect("cached");
    assert_eq!(hit.digest, results[0].digest);
    assert!(verify(&*s.store).await.expect("verify").problems.is_empty());
}

async fn cache_forgets_only_a_stale_snapshot(s: Subject) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = BuildCache::new(s.store.clone());
    let base = base_image(&cache, &dir).await;
    let digest = template("1.0.0", "stale").digest();
    let old = cache
        .get_or_build(&digest, || artifacts(&dir, base, "old".into()))
        .await
        .expect("build");
    assert!(
        !cache
            .forget(&digest, &Digest::of(b"another snapshot"))
            .await
            .expect("forget"),
        "a snapshot other than the one named is kept"
    );
    assert_eq!(
        cache.get(&digest).await.expect("get").map(|b| b.digest),
        Some(old.digest)
    );
    assert!(cache.forget(&digest, &old.digest).await.expect("forget"));
    assert!(
        cache.get(&digest).await.expect("get").is_none(),
        "forgotten"
    );
    assert!(
        !cache.forget(&digest, &old.digest).await.expect("forget"),
        "forgetting twice does nothing"
    );
    let new = cache
        .get_or_build(&digest, || artifacts(&dir, base, "new".into()))
        .await
        .expect("build");
    assert!(new.built_here, "the next call builds again");
    assert_ne!(new.digest, old.digest);
    assert!(verify(&*s.store).await.expect("verify").problems.is_empty());
}

async fn cache_records_failures(s: Subject) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = BuildCache::new(s.store.clone());
    let base = base_image(&cache, &dir).await;
    let digest = template("1.0.0", "y").digest();
    let err = cache
        .get_or_build(&digest, || async {
            Err(BuildFailure {
                message: "build.run[0] exited with 1".into(),
                log: "+ false\n".into(),
            })
        })
        .await
        .expect_err("a failed build fails");
    assert!(matches!(err, StoreError::BuildFailed { template, .. } if template == digest));
    let record = cache
        .failure(&digest)
        .await
        .expect("failure")
        .expect("recorded");
    assert_eq!(record.message, "build.run[0] exited with 1");
    assert_eq!(record.log, "+ false\n");
    assert!(
        cache.get(&digest).await.expect("get").is_none(),
        "a failure is not a success"
    );
    // The next call builds again, and success clears the record.
    let built = cache
        .get_or_build(&digest, || artifacts(&dir, base, "retry".into()))
        .await
        .map(|b| b.built_here);
    assert!(matches!(built, Ok(true)));
    assert!(cache.failure(&digest).await.expect("failure").is_none());
}

async fn checkpoints_keep_their_parent(s: Subject) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = &*s.store;
    let cache = BuildCache::new(s.store.clone());
    let checkpoints = crate::Checkpoints::new(s.store.clone());
    let base = base_image(&cache, &dir).await;
    // An unpublished template: only the checkpoint keeps its snapshot.
    let parent = cache
        .get_or_build(&template("1.0.0", "parent").digest(), || {
            artifacts(&dir, base, "parent".into())
        })
        .await
        .expect("build");
    let state = dir.path().join("checkpoint-state");
    tokio::fs::write(&state, b"the whole state")
        .await
        .expect("write");
    let (digest, manifest) = checkpoints
        .put(
            &parent.digest,
            &parent.manifest,
            "c-0123456789ab",
            &BTreeMap::from([("state".to_owned(), state)]),
        )
        .await
        .expect("put");
    assert_eq!(
        manifest
            .parent
            .as_ref()
            .map(|p| (p.snapshot, p.computer.as_str())),
        Some((parent.digest, "c-0123456789ab"))
    );
    assert_eq!(
        manifest.blobs["memory"], parent.manifest.blobs["memory"],
        "reused"
    );
    assert_ne!(
        manifest.blobs["state"], parent.manifest.blobs["state"],
        "its own"
    );
    assert_eq!(
        checkpoints.get(&digest).await.expect("get"),
        Some(manifest.clone())
    );
    assert_eq!(
        checkpoints.get(&parent.digest).await.expect("get"),
        None,
        "a template's snapshot is not a checkpoint"
    );
    gc(store).await.expect("gc");
    assert!(verify(store).await.expect("verify").problems.is_empty());
    for blob in parent
        .manifest
        .blobs
        .values()
        .chain(manifest.blobs.values())
    {
        assert!(
            store.stat(&blob.digest).await.expect("stat").is_some(),
            "kept"
        );
    }
    assert!(
        checkpoints
            .lease("c-1", &digest)
            .await
            .expect("lease")
            .is_some(),
        "a computer runs from it"
    );
    assert!(checkpoints.remove(&digest).await.expect("remove"));
    gc(store).await.expect("gc");
    assert!(
        store
            .stat(&manifest.blobs["state"].digest)
            .await
            .expect("stat")
            .is_some(),
        "its lease keeps it"
    );
    assert!(cache.release("c-1").await.expect("release"));
    gc(store).await.expect("gc");
    assert_eq!(
        store
            .stat(&manifest.blobs["state"].digest)
            .await
            .expect("stat"),
        None
    );
    assert_eq!(
        store
            .stat(&parent.manifest.blobs["memory"].digest)
            .await
            .expect("stat"),
        None
    );
    assert_eq!(checkpoints.get(&digest).await.expect("get"), None);
}

async fn published_checkpoints_share_the_refs_of_templates(s: Subject) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = &*s.store;
    let cache = BuildCache::new(s.store.clone());
    let registry = Registry::new(s.store.clone());
    let checkpoints = crate::Checkpoints::new(s.store.clone());
    let base = base_image(&cache, &dir).await;
    let parent = cache
        .get_or_build(&template("1.0.0", "parent").digest(), || {
            artifacts(&dir, base, "parent".into())
        })
        .await
        .expect("build");
    let mut made = Vec::new();
    for text in ["one state", "another state"] {
        let state = dir.path().join("checkpoint-state");
        tokio::fs::write(&state, text).await.expect("write");
        let files = BTreeMap::from([("state".to_owned(), state)]);
        let (digest, _) = checkpoints
            .put(&parent.digest, &parent.manifest, "c-0123456789ab", &files)
            .await
            .expect("put");
        made.push(digest);
    }
    let (one, other) = (made[0], made[1]);
    let at = |r: &str| r.parse::<orgo_template::TemplateRef>().expect("a ref");

    assert_eq!(
        checkpoints
            .publish(&at("team/branch@1.0.0"), &one)
            .await
            .ok(),
        Some(true)
    );
    assert_eq!(
        checkpoints
            .publish(&at("team/branch@1.0.0"), &one)
            .await
            .ok(),
        Some(false),
        "again: a no-op"
    );
    let refused = checkpoints.publish(&at("team/branch@1.0.0"), &other).await;
    assert!(
        matches!(&refused, Err(StoreError::Immutable { existing, new, .. }) if *existing == one && *new == other),
        "{refused:?}"
    );
    assert_eq!(
        checkpoints
            .resolve(&at("team/branch@1.0.0"))
            .await
            .expect("resolve"),
        Some(one)
    );
    assert_eq!(
        checkpoints
            .resolve(&at("team/branch@2.0.0"))
            .await
            .expect("resolve"),
        None
    );

    // A template's ref takes no checkpoint, and a checkpoint's no template.
    let team = Name::new("team").expect("name");
    let app = template("1.0.0", "app");
    registry.publish(team.clone(), &app).await.expect("publish");
    let refused = checkpoints.publish(&at("team/app@1.0.0"), &one).await;
    assert!(
        matches!(refused, Err(StoreError::Immutable { .. })),
        "{refused:?}"
    );
    let branch =
        Template::from_yaml("api_version: orgo.ai/v1\nname: branch@1.0.0\n").expect("valid");
    let refused = registry.publish(team.clone(), &branch).await;
    assert!(
        matches!(refused, Err(StoreError::Immutable { .. })),
        "{refused:?}"
    );
    assert!(
        matches!(
            checkpoints.publish(&at("system/branch@1.0.0"), &one).await,
            Err(StoreError::Reserved { .. })
        ),
        "nothing is published into the reserved namespace"
    );
    let listed = checkpoints.list_published(Some(&team)).await.expect("list");
    assert_eq!(listed, vec![(at("team/branch@1.0.0"), one)]);

    // Published, it is a gc root even once removed from `checkpoints/`.
    assert!(checkpoints.remove(&one).await.expect("remove"));
    gc(store).await.expect("gc");
    assert!(verify(store).await.expect("verify").problems.is_empty());
    let manifest = crate::get_manifest(store, &one).await.expect("read");
    assert!(manifest.is_some(), "kept by its ref");
    assert!(
        checkpoints
            .unpublish(&at("team/branch@1.0.0"))
            .await
            .expect("unpublish")
    );
    gc(store).await.expect("gc");
    assert!(
        crate::get_manifest(store, &one)
            .await
            .expect("read")
            .is_none()
    );
}

async fn gc_keeps_what_is_reachable(s: Subject) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = &*s.store;
    let registry = Registry::new(s.store.clone());
    let cache = BuildCache::new(s.store.clone());
    let base = base_image(&cache, &dir).await;
    let ns = Name::new("default").expect("name");
    let (kept, leased, dropped) = (
        template("1.0.0", "kept"),
        template("2.0.0", "leased"),
        template("3.0.0", "dropped"),
    );
    for t in [&kept, &leased, &dropped] {
        registry.publish(ns.clone(), t).await.expect("publish");
        cache
            .get_or_build(&t.digest(), || {
                artifacts(&dir, base, t.template().version.to_string())
            })
            .await
            .expect("build");
    }
    cache
        .lease("computer-1", &leased.digest())
        .await
        .expect("lease");
    let stray = put(store, b"unreferenced").await;
    for t in [&leased, &dropped] {
        registry
            .delete(&t.reference(ns.clone()))
            .await
            .expect("delete");
    }
    let report = gc(store).await.expect("gc");
    // dropped: its template, manifest and three blobs; and the stray blob.
    assert_eq!(report.blobs_removed, 6, "{report:?}");
    assert_eq!(report.refs_removed, 1, "dropped's snapshot ref");
    assert_eq!(store.stat(&stray).await.expect("stat"), None);
    assert!(cache.get(&dropped.digest()).await.expect("get").is_none());
    for t in [&kept, &leased] {
        let built = cache.get(&t.digest()).await.expect("get").expect("kept");
        for blob in built.manifest.blobs.values() {
            assert!(store.stat(&blob.digest).await.expect("stat").is_some());
        }
    }
    assert!(verify(store).await.expect("verify").problems.is_empty());
    // Releasing the lease lets the leased snapshot go.
    assert!(cache.release("computer-1").await.expect("release"));
    assert_eq!(gc(store).await.expect("gc").blobs_removed, 5);
    assert!(cache.get(&leased.digest()).await.expect("get").is_none());
    assert_eq!(
        gc(store).await.expect("gc"),
        crate::GcReport::default(),
        "gc is idempotent"
    );
}

async fn gc_during_builds(s: Subject) {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let registry = Registry::new(s.store.clone());
    let cache = BuildCache::new(s.store.clone());
    let base = base_image(&cache, &dir).await;
    let ns = Name::new("default").expect("name");
    // Builds and collections start together and overlap: each build waits
    // inside its build step until gc has run at least once.
    let start = Arc::new(tokio::sync::Barrier::new(7));
    let (collected_tx, collected) = tokio::sync::watch::channel(false);
    let finished = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (registry, cache, ns, dir) = (registry.clone(), cache.clone(), ns.clone(), dir.clone());
        let (start, mut collected, finished) = (start.clone(), collected.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let t = template(&format!("1.0.{i}"), "racing");
            start.wait().await;
            let build = || async move {
                collected
                    .wait_for(|ran| *ran)
                    .await
                    .expect("the collector runs");
                artifacts(&dir, base, format!("gc{i}")).await
            };
            // Even builds are published first; odd ones are launched from
            // an unpublished template, their lease their only root.
            if i % 2 == 0 {
                registry.publish(ns, &t).await.expect("publish");
                cache.get_or_build(&t.digest(), build).await.expect("build");
            } else {
                cache
                    .lease_or_build(&format!("computer-{i}"), &t.digest(), build)
                    .await
                    .expect("build");
            }
            finished.fetch_add(1, Ordering::SeqCst);
            t.digest()
        }));
    }
    let store = s.store.clone();
    let collector = tokio::spawn(async move {
        start.wait().await;
        let mut runs = 0;
        while finished.load(Ordering::SeqCst) < 6 {
            gc(&*store).await.expect("gc");
            runs += 1;
            collected_tx.send_replace(true);
            tokio::task::yield_now().await;
        }
        runs
    });
    let mut digests = Vec::new();
    for task in tasks {
        digests.push(task.await.expect("task"));
    }
    assert!(collector.await.expect("gc task") > 0);
    gc(&*s.store).await.expect("gc");
    for digest in digests {
        let built = cache
            .get(&digest)
            .await
            .expect("get")
            .expect("a published or leased build stays");
        for blob in built.manifest.blobs.values() {
            assert!(s.store.stat(&blob.digest).await.expect("stat").is_some());
        }
    }
    assert!(verify(&*s.store).await.expect("verify").problems.is_empty());
}
