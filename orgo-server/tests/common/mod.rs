//! What the server tests share: a server on a free loopback port over a
//! runtime, keys, and a small client over reqwest.

#![allow(dead_code, reason = "each test binary uses some of these helpers")]

use std::path::Path;

use orgo_server::{KeyStore, Server, ServerConfig};
use orgo_template::Name;

/// A running server: its base URL and the task serving it.
pub(crate) struct TestServer {
    pub(crate) url: String,
    pub(crate) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Serves `runtime` on `127.0.0.1:0`.
    pub(crate) async fn start(runtime: orgo_runtime::Runtime, config: ServerConfig) -> TestServer {
        let server = Server::open(runtime, config)
            .await
            .expect("the server opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serves");
        });
        TestServer {
            url,
            stop: Some(stop),
            task,
        }
    }

    /// Stops it as SIGTERM would, and waits.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

/// A new key of `namespace`.
pub(crate) fn key(home: &Path, namespace: &str, read_only: bool) -> String {
    let ns: Name = namespace.parse().expect("a namespace");
    KeyStore::new(home)
        .create(&ns, read_only)
        .expect("a key is created")
        .0
}

/// A client with `key`.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("a client")
}

/// The `code` of an error answer, checking its shape.
pub(crate) async fn error_code(response: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("an error is JSON");
    let error = &body["error"];
    assert!(
        error["code"].is_string() && error["message"].is_string() && error.get("details").is_some(),
        "not the error shape: {body}"
    );
    (
        status,
        error["code"].as_str().expect("a string").to_owned(),
        error["details"].clone(),
    )
}
