//! Desktop figures under QEMU (TCG here), as a bench binary: the numbers
//! are printed, not asserted.
//!
//! - a screenshot of a 1280x800x24 desktop: the agent's in-process capture
//!   (`Computer::screenshot`, X11 `GetImage` and PNG, back on the host)
//!   against `scrot` run through `exec` with its PNG read back, the way a
//!   helper process per action does it; medians of 15 and the ratio;
//! - the round trip of a click and of a key (`Return`), medians of 30;
//! - a launch (from the `launch` call to the first `exec` answer) of that
//!   desktop template against a headless one, medians of 7.
//!
//! `cargo bench -p orgo-benches --bench desktop`. Needs root and QEMU; the
//! store is `ORGO_BENCH_HOME`, else `target/orgo-test-home` (where the
//! tests keep the base and desktop images).

#![allow(clippy::unwrap_used, reason = "a bench: a failure ends it")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use orgo_runtime::{Accel, Exec, LaunchOptions, MouseButton, Runtime, RuntimeConfig};
use orgo_template::Template;

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
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

async fn launch(runtime: &Runtime, template: &Template) -> (Duration, orgo_runtime::Computer) {
    let started = Instant::now();
    let computer = runtime
        .launch(template, LaunchOptions::default(), &mut |_| {})
        .await
        .unwrap();
    let out = computer
        .exec(Exec::argv(["true"]), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(out.status.success());
    (started.elapsed(), computer)
}

#[tokio::main]
async fn main() {
    let mut config = RuntimeConfig::new(home());
    config.accel = Some(Accel::Tcg);
    if let Some(agent) = std::env::var_os("ORGO_AGENT") {
        config.agent = Some(agent.into());
    }
    let runtime = Runtime::open(config).await.unwrap();
    let desktop = Template::from_yaml(
        "api_version: orgo.ai/v1\ntemplate: { name: bench-desktop, version: 1.0.0 }\ndisplay: 1280x800\n",
    )
    .unwrap();
    let headless = Template::from_yaml(
        "api_version: orgo.ai/v1\ntemplate: { name: bench-headless, version: 1.0.0 }\n",
    )
    .unwrap();
    for t in [&desktop, &headless] {
        runtime
            .build(t, &mut |e| eprintln!("  {e:?}"))
            .await
            .unwrap();
    }

    let (_, computer) = launch(&runtime, &desktop).await;
    // Warm both paths once.
    computer.screenshot(None).await.unwrap();
    let scrot = Exec::shell("DISPLAY=:0 scrot -o /tmp/s.png && cat /tmp/s.png");
    computer
        .exec(scrot.clone(), Duration::from_secs(60))
        .await
        .unwrap();
    let mut agent = Vec::new();
    let mut helper = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let shot = computer.screenshot(None).await.unwrap();
        agent.push(t.elapsed());
        assert_eq!((shot.width, shot.height), (1280, 800));
        let t = Instant::now();
        let out = computer
            .exec(scrot.clone(), Duration::from_secs(60))
            .await
            .unwrap();
        helper.push(t.elapsed());
        assert!(out.status.success() && out.stdout.starts_with(b"\x89PNG"));
    }
    let (agent, helper) = (median(agent), median(helper));
    println!(
        "screenshot 1280x800: in-agent median {}, scrot via exec median {}: {:.1}x faster",
        ms(agent),
        ms(helper),
        helper.as_secs_f64() / agent.as_secs_f64()
    );

    let mut clicks = Vec::new();
    let mut keys = Vec::new();
    for i in 0..30 {
        let t = Instant::now();
        computer
            .click(600 + i, 400, MouseButton::Left, false)
            .await
            .unwrap();
        clicks.push(t.elapsed());
        let t = Instant::now();
        computer.key("shift").await.unwrap();
        keys.push(t.elapsed());
    }
    println!(
        "input round trip: click median {}, key median {}",
        ms(median(clicks)),
        ms(median(keys))
    );
    computer.stop().await.unwrap();

    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..7 {
        for (i, t) in [&desktop, &headless].into_iter().enumerate() {
            let (took, computer) = launch(&runtime, t).await;
            times[i].push(took);
            computer.stop().await.unwrap();
        }
    }
    let [d, h] = times;
    println!(
        "launch to first exec: desktop 1280x800 median {}, headless median {}",
        ms(median(d)),
        ms(median(h))
    );
}
