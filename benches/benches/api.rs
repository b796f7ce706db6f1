//! The HTTP API's figures under QEMU (TCG here), as a bench binary: the
//! numbers are printed, not asserted.
//!
//! - one `exec` round trip (`true`) over HTTP (`POST .../exec`, NDJSON
//!   read to its end) against the library's `Computer::exec` on the same
//!   computer: medians of 50;
//! - `GET /api/templates` requests per second, from 1 and from 8 clients;
//! - launch p50 through the API (`POST /api/computers`, the server's warm
//!   pool of 1) against the library's launch from its warm pool, 10 each,
//!   the pool refilled before each.
//!
//! `cargo bench -p orgo-benches --bench api`. Needs root and QEMU; the
//! store is `ORGO_BENCH_HOME`, else `target/orgo-test-home` (where the
//! tests keep the base image).

#![allow(clippy::unwrap_used, reason = "a bench: a failure ends it")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use orgo_runtime::{Accel, Exec, LaunchOptions, Runtime, RuntimeConfig};
use orgo_template::Template;
use serde_json::{Value, json};

const BASE: &str = "api_version: orgo.ai/v1\nname: restart-base@1.0.0\nbuild:\n  run: [\"echo base > /opt/base.txt\"]\n";

fn home() -> PathBuf {
    std::env::var_os("ORGO_BENCH_HOME").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/orgo-test-home"),
        PathBuf::from,
    )
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn runtime(warm_pool: usize) -> Runtime {
    let mut config = RuntimeConfig::new(home());
    config.accel = Some(Accel::Tcg);
    config.warm_pool = warm_pool;
    config.agent = std::env::var_os("ORGO_AGENT").map(PathBuf::from);
    Runtime::open(config).await.unwrap()
}

/// Serves `runtime` on a loopback port; returns the URL and a stopper.
async fn serve(
    runtime: Runtime,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let server = orgo_server::Server::open(runtime, orgo_server::ServerConfig::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, stop, task)
}

async fn wait_parked(runtime: &Runtime) {
    while runtime.parked().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let template = Template::from_yaml(BASE).unwrap();
    let key = orgo_server::KeyStore::new(&home())
        .create(&"bench".parse().unwrap(), false)
        .unwrap()
        .0;
    let http = reqwest::Client::new();

    // Launch p50 through the API, with the server's pool.
    let served = runtime(1).await;
    served.build(&template, &mut |_| {}).await.unwrap();
    served.prewarm(&template, 1).await.unwrap();
    let (url, stop, task) = serve(served.clone()).await;
    http.post(format!("{url}/api/templates"))
        .bearer_auth(&key)
        .body(BASE)
        .send()
        .await
        .unwrap();
    let mut api_launch = Vec::new();
    let mut kept = None;
    for i in 0..10 {
        wait_parked(&served).await;
        let started = Instant::now();
        let response = http
            .post(format!("{url}/api/computers"))
            .bearer_auth(&key)
            .json(&json!({"template_ref": "restart-base@1.0.0"}))
            .send()
            .await
            .unwrap();
        api_launch.push(started.elapsed());
        assert_eq!(response.status().as_u16(), 201);
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        if i == 9 {
            kept = Some(id);
        } else {
            http.delete(format!("{url}/api/computers/{id}"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
        }
    }
    let id = kept.unwrap();

    // Exec round trips over HTTP.
    let mut over_http = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let text = http
            .post(format!("{url}/api/computers/{id}/exec"))
            .bearer_auth(&key)
            .json(&json!({"command": ["true"]}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        over_http.push(started.elapsed());
        assert!(text.contains("\"exit_code\":0"), "{text}");
    }

    // GET /api/templates per second.
    let mut rates = Vec::new();
    for clients in [1usize, 8] {
        let per_client = 2000 / clients;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_client {
                    let r = http
                        .get(format!("{url}/api/templates"))
                        .bearer_auth(&key)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    r.bytes().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        rates.push((
            clients,
            (per_client * clients) as f64 / started.elapsed().as_secs_f64(),
        ));
    }
    let _ = stop.send(());
    task.await.unwrap();
    drop(served);

    // The same computer through the library (the server's connection is closed).
    let library = runtime(1).await;
    let computer = library.connect(&id).await.unwrap();
    let mut direct = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let out = computer
            .exec(Exec::argv(["true"]), Duration::from_secs(30))
            .await
            .unwrap();
        direct.push(started.elapsed());
        assert!(out.status.success());
    }
    computer.stop().await.unwrap();

    // Launch p50 from the library's pool.
    library.prewarm(&template, 1).await.unwrap();
    let mut lib_launch = Vec::new();
    for _ in 0..10 {
        wait_parked(&library).await;
        let started = Instant::now();
        let computer = library
            .launch(&template, LaunchOptions::default(), &mut |_| {})
            .await
            .unwrap();
        lib_launch.push(started.elapsed());
        computer.stop().await.unwrap();
    }
    library.drain().await;

    let (http_exec, lib_exec) = (median(over_http), median(direct));
    let delta = (http_exec.as_secs_f64() - lib_exec.as_secs_f64()) * 1e3;
    println!(
        "exec round trip (median of 50): HTTP {} | library {} | difference {delta:+.2} ms",
        ms(http_exec),
        ms(lib_exec),
    );
    for (clients, rate) in rates {
        println!("GET /api/templates: {rate:.0} requests/s from {clients} client(s)");
    }
    println!(
        "launch p50 from the warm pool (10 each): API {} | library {}",
        ms(median(api_launch)),
        ms(median(lib_launch))
    );
}
