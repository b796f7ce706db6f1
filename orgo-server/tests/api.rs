//! The API without VMs, over real TCP: the committed OpenAPI document,
//! publishing (created, same, conflict, invalid, unauthenticated), the
//! auth matrix of key x namespace x route, the refusal of host files, the
//! limits (413, 429 with `Retry-After`), and the error shape everywhere.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::path::{Path, PathBuf};

use common::{TestServer, client, error_code, key};
use orgo_server::{Limits, ServerConfig};
use reqwest::Method;

const COMMITTED: &str = "openapi.json";

#[test]
fn committed_openapi_matches_the_handlers() {
    let generated = orgo_server::openapi_json();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
    if std::env::var_os("ORGO_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "orgo-server/{COMMITTED} is out of date with the handlers; regenerate it with\n  \
         ORGO_BLESS=1 cargo test -p orgo-server --test api committed_openapi"
    );
}

async fn start(config: ServerConfig) -> (tempfile::TempDir, TestServer) {
    let home = tempfile::tempdir().unwrap();
    let runtime = orgo_runtime::Runtime::open(orgo_runtime::RuntimeConfig::new(home.path()))
        .await
        .unwrap();
    let server = TestServer::start(runtime, config).await;
    (home, server)
}

fn doc(name: &str, extra: &str) -> String {
    format!("api_version: orgo.ai/v1\nname: {name}\n{extra}")
}

async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<String>,
) -> reqwest::Response {
    let mut request = client().request(method, format!("{}{path}", server.url));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn documents_are_served_without_a_key() {
    let (_home, server) = start(ServerConfig::default()).await;
    let openapi: serde_json::Value = send(&server, Method::GET, "/api/openapi.json", None, None)
        .await
        .json()
        .await
        .unwrap();
    let committed: serde_json::Value = serde_json::from_str(&orgo_server::openapi_json()).unwrap();
    assert_eq!(openapi, committed);
    let schema: serde_json::Value = send(&server, Method::GET, "/api/template-schema", None, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(schema, orgo_template::json_schema());
    let (status, code, _) =
        error_code(send(&server, Method::GET, "/api/nothing", None, None).await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, _) =
        error_code(send(&server, Method::PATCH, "/api/templates", None, None).await).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    server.shutdown().await;
}

#[tokio::test]
async fn publish_answers_created_same_conflict_and_invalid() {
    let (home, server) = start(ServerConfig::default()).await;
    let team = key(home.path(), "team", false);
    let post = |body: String| {
        send(
            &server,
            Method::POST,
            "/api/templates",
            Some(&team),
            Some(body),
        )
    };
    let first = post(doc("app@1.0.0", "")).await;
    assert_eq!(first.status().as_u16(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["ref"], "team/app@1.0.0");
    assert_eq!(first["published"], true);
    let again = post(doc("app@1.0.0", "")).await;
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["published"],
        false
    );
    // The same version with other content: 409 with both digests.
    let (status, code, details) = error_code(post(doc("app@1.0.0", "env: { A: b }\n")).await).await;
    assert_eq!((status, code.as_str()), (409, "version_conflict"));
    assert_eq!(details["existing"], first["digest"]);
    assert!(
        details["new"].as_str().unwrap().starts_with("sha256:")
            && details["new"] != details["existing"]
    );
    // Invalid: every problem with its path, line and column.
    let (status, code, details) = error_code(
        post(
            "api_version: orgo.ai/v1\nname: app@1.0.0\nhardwares: {}\nhardware: { cpu: 3 }\n"
                .into(),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "invalid_template"));
    let errors = details["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{details}");
    assert!(
        errors
            .iter()
            .any(|e| e["path"] == "hardwares" && e["line"] == 3 && e["column"] == 1),
        "{details}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e["path"] == "hardware.cpu" && e["line"] == 4),
        "{details}"
    );
    // JSON is a template too.
    let json = serde_json::json!({"api_version": "orgo.ai/v1", "name": "json@1.0.0"}).to_string();
    assert_eq!(post(json).await.status().as_u16(), 201);
    // Unauthenticated: no key, a wrong key.
    for key in [None, Some("orgo_0000")] {
        let response = send(
            &server,
            Method::POST,
            "/api/templates",
            key,
            Some(doc("x@1.0.0", "")),
        )
        .await;
        let (status, code, _) = error_code(response).await;
        assert_eq!((status, code.as_str()), (401, "unauthorized"));
    }
    // Read back: the canonical document, its digest, no build yet.
    let read: serde_json::Value = send(
        &server,
        Method::GET,
        "/api/templates/team/app/1.0.0",
        Some(&team),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(read["digest"], first["digest"]);
    assert_eq!(read["document"]["template"]["name"], "app");
    assert_eq!(read["build"]["status"], "none");
    server.shutdown().await;
}

/// Who may do what: every route, with a read-write and a read-only key of
/// `team`, a key of `other`, a revoked key and none.
#[tokio::test]
async fn auth_matrix() {
    // No build or launch may start here (no VM in this test): a request
    // that gets past the checks gets 429.
    let config = ServerConfig {
        limits: Limits {
            builds: 0,
            computers_per_namespace: 0,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let (home, server) = start(config).await;
    let rw = key(home.path(), "team", false);
    let ro = key(home.path(), "team", true);
    let other = key(home.path(), "other", false);
    let revoked = key(home.path(), "team", false);
    let keys = orgo_server::KeyStore::new(home.path());
    let id = keys.list().unwrap().last().unwrap().id.clone();
    keys.revoke(&id).unwrap();
    for name in ["app@1.0.0", "gone@1.0.0"] {
        let response = send(
            &server,
            Method::POST,
            "/api/templates",
            Some(&rw),
            Some(doc(name, "")),
        )
        .await;
        assert_eq!(response.status().as_u16(), 201);
    }
    let launch = |r: &str| Some(serde_json::json!({"template_ref": r}).to_string());
    let publish = Some(doc("new@1.0.0", ""));
    // (method, path, body, [rw, ro, other]): an expected status, or a code.
    type Row<'a> = (Method, &'a str, Option<String>, [&'a str; 3]);
    let rows: Vec<Row> = vec![
        (Method::GET, "/api/templates", None, ["200", "200", "200"]),
        (
            Method::GET,
            "/api/templates?namespace=team",
            None,
            ["200", "200", "namespace_scope_mismatch"],
        ),
        (
            Method::GET,
            "/api/templates?namespace=system",
            None,
            ["200", "200", "200"],
        ),
        (
            Method::POST,
            "/api/templates?namespace=team",
            publish.clone(),
            ["201", "read_only_key", "namespace_scope_mismatch"],
        ),
        (
            Method::POST,
            "/api/templates?namespace=system",
            publish.clone(),
            [
                "namespace_scope_mismatch",
                "read_only_key",
                "namespace_scope_mismatch",
            ],
        ),
        (
            Method::GET,
            "/api/templates/team/app/1.0.0",
            None,
            ["200", "200", "namespace_scope_mismatch"],
        ),
        (
            Method::GET,
            "/api/templates/system/python/1.0.0",
            None,
            ["200", "200", "200"],
        ),
        (
            Method::GET,
            "/api/templates/team/app/1.0.0/build",
            None,
            ["200", "200", "namespace_scope_mismatch"],
        ),
        (
            Method::GET,
            "/api/templates/team/app/1.0.0/build/events",
            None,
            ["200", "200", "namespace_scope_mismatch"],
        ),
        (
            Method::DELETE,
            "/api/templates/team/app/1.0.0/build",
            None,
            ["200", "read_only_key", "namespace_scope_mismatch"],
        ),
        (
            Method::POST,
            "/api/templates/team/app/1.0.0/build",
            None,
            ["429", "read_only_key", "namespace_scope_mismatch"],
        ),
        (
            Method::POST,
            "/api/templates/system/python/1.0.0/build",
            None,
            ["429", "read_only_key", "429"],
        ),
        (
            Method::DELETE,
            "/api/templates/system/python/1.0.0",
            None,
            [
                "namespace_scope_mismatch",
                "read_only_key",
                "namespace_scope_mismatch",
            ],
        ),
        (
            Method::DELETE,
            "/api/templates/team/gone/1.0.0",
            None,
            ["200", "read_only_key", "namespace_scope_mismatch"],
        ),
        (Method::GET, "/api/computers", None, ["200", "200", "200"]),
        (
            Method::GET,
            "/api/computers/c-000000000000",
            None,
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::DELETE,
            "/api/computers/c-000000000000",
            None,
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::POST,
            "/api/computers/c-000000000000/exec",
            Some(r#"{"command": "true"}"#.into()),
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::GET,
            "/api/computers/c-000000000000/files?path=/etc/hostname",
            None,
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::PUT,
            "/api/computers/c-000000000000/files?path=/tmp/x",
            Some("x".into()),
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::GET,
            "/api/computers/c-000000000000/logs?follow=true",
            None,
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::GET,
            "/api/computers/c-000000000000/events",
            None,
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::POST,
            "/api/computers/c-000000000000/webhooks?path=/deploy",
            Some("x".into()),
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::GET,
            "/api/computers/c-000000000000/metrics",
            None,
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::GET,
            "/api/computers/c-000000000000/services",
            None,
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::GET,
            "/api/computers/c-000000000000/egress",
            None,
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::GET,
            "/api/computers/c-000000000000/desktop/screenshot",
            None,
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::GET,
            "/api/computers/c-000000000000/desktop/cursor",
            None,
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::POST,
            "/api/computers/c-000000000000/desktop/actions",
            Some(r#"{"action": "click", "x": 1, "y": 1}"#.into()),
            ["not_found", "not_found", "not_found"],
        ),
        (
            Method::POST,
            "/api/computers",
            Some(
                serde_json::json!({"template_ref": "team/app@1.0.0", "egress_learn": true})
                    .to_string(),
            ),
            ["429", "read_only_key", "namespace_scope_mismatch"],
        ),
        (
            Method::POST,
            "/api/computers",
            launch("team/app@1.0.0"),
            ["429", "read_only_key", "namespace_scope_mismatch"],
        ),
        (
            Method::POST,
            "/api/computers",
            launch("app@1.0.0"),
            ["429", "read_only_key", "not_found"],
        ),
    ];
    for (method, path, body, expected) in rows {
        for (key, want) in [&rw, &ro, &other].into_iter().zip(expected) {
            let response = send(&server, method.clone(), path, Some(key), body.clone()).await;
            let status = response.status().as_u16();
            let got = if status < 300 || status == 429 {
                status.to_string()
            } else {
                error_code(response).await.1
            };
            assert_eq!(
                got,
                want,
                "{method} {path} with the key of `{}`",
                if key == &rw {
                    "team"
                } else if key == &ro {
                    "team (read-only)"
                } else {
                    "other"
                }
            );
        }
        for key in [None, Some(revoked.as_str())] {
            let response = send(&server, method.clone(), path, key, body.clone()).await;
            let (status, code, _) = error_code(response).await;
            assert_eq!(
                (status, code.as_str()),
                (401, "unauthorized"),
                "{method} {path} with {key:?}"
            );
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn host_files_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let allowed: PathBuf = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    std::fs::write(allowed.join("ok.txt"), "ok").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", allowed.join("passwd")).unwrap();
    let with_file = |name: &str, path: &Path| {
        doc(
            name,
            &format!(
                "files:\n  - {{ to: /a, inline: x }}\n  - {{ to: /b, from: \"file://{}\" }}\n",
                path.display()
            ),
        )
    };
    let (home, server) = start(ServerConfig::default()).await;
    let team = key(home.path(), "team", false);
    for (name, body) in [
        ("a@1.0.0", with_file("a@1.0.0", &allowed.join("ok.txt"))),
        ("b@1.0.0", with_file("b@1.0.0", Path::new("/etc/shadow"))),
        (
            "c@1.0.0",
            doc(
                "c@1.0.0",
                "files:\n  - { to: /b, from: \"s3://bucket/key\" }\n",
            ),
        ),
    ] {
        let response = send(
            &server,
            Method::POST,
            "/api/templates",
            Some(&team),
            Some(body),
        )
        .await;
        let (status, code, details) = error_code(response).await;
        assert_eq!(
            (status, code.as_str()),
            (422, "host_file_refused"),
            "{name}"
        );
        assert!(
            details["field"].as_str().unwrap().starts_with("files["),
            "{details}"
        );
    }
    server.shutdown().await;
    let config = ServerConfig {
        allow_file_root: Some(allowed.clone()),
        ..ServerConfig::default()
    };
    let (home, server) = start(config).await;
    let team = key(home.path(), "team", false);
    let inside = send(
        &server,
        Method::POST,
        "/api/templates",
        Some(&team),
        Some(with_file("a@1.0.0", &allowed.join("ok.txt"))),
    )
    .await;
    assert_eq!(inside.status().as_u16(), 201);
    // A symlink inside that resolves outside is refused.
    let link = send(
        &server,
        Method::POST,
        "/api/templates",
        Some(&team),
        Some(with_file("l@1.0.0", &allowed.join("passwd"))),
    )
    .await;
    let (status, code, details) = error_code(link).await;
    assert_eq!((status, code.as_str()), (422, "host_file_refused"));
    assert_eq!(details["field"], "files[1].from");
    server.shutdown().await;
}

#[tokio::test]
async fn limits_answer_413_and_429_with_retry_after() {
    let config = ServerConfig {
        limits: Limits {
            builds: 0,
            computers_per_namespace: 0,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let (home, server) = start(config).await;
    let team = key(home.path(), "team", false);
    let huge = doc(
        "big@1.0.0",
        &format!(
            "env:\n  A: \"{}\"\n",
            "x".repeat(orgo_template::MAX_DOCUMENT_BYTES)
        ),
    );
    let (status, code, _) = error_code(
        send(
            &server,
            Method::POST,
            "/api/templates",
            Some(&team),
            Some(huge),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    assert_eq!(
        send(
            &server,
            Method::POST,
            "/api/templates",
            Some(&team),
            Some(doc("app@1.0.0", ""))
        )
        .await
        .status()
        .as_u16(),
        201
    );
    for (path, body, want) in [
        (
            "/api/templates/team/app/1.0.0/build",
            None,
            "too_many_builds",
        ),
        (
            "/api/computers",
            Some(r#"{"template_ref": "app@1.0.0"}"#.to_owned()),
            "too_many_computers",
        ),
    ] {
        let response = send(&server, Method::POST, path, Some(&team), body).await;
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, code, _) = error_code(response).await;
        assert_eq!((status, code.as_str()), (429, want));
        assert!(
            retry.is_some_and(|r| r.parse::<u64>().is_ok()),
            "{path}: no Retry-After"
        );
    }
    // Launch options this runtime cannot honour are refused, naming them.
    let (status, code, details) = error_code(
        send(
            &server,
            Method::POST,
            "/api/computers",
            Some(&team),
            Some(r#"{"template_ref": "app@1.0.0", "disk_gb": 20}"#.into()),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "unsupported"));
    assert_eq!(details["fields"][0]["field"], "disk_gb");
    let (status, code, _) = error_code(
        send(
            &server,
            Method::POST,
            "/api/computers",
            Some(&team),
            Some(r#"{"template_ref": 3}"#.into()),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    server.shutdown().await;
}
