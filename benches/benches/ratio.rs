//! The pipeline-to-raw-parse ratio, measured robustly on a noisy machine.
//!
//! Criterion times each function in its own window, so a machine whose speed
//! drifts (a shared VM) skews the ratio of two groups. Here each round times a
//! batch of `serde_yaml::from_str::<Value>` and then a batch of
//! `Template::from_yaml` + `digest()` on the same input, back to back, and the
//! median of the per-round ratios is reported beside the median times.
//!
//! Run with `cargo bench -p orgo-benches --bench ratio`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use orgo_benches::{REFERENCE_APPS, REFERENCE_CANONICAL, WORKSTATION, many_apps};
use orgo_template::Template;

const ROUNDS: usize = 101;

/// Calls `f` often enough to fill about 2 ms, then returns the time per call.
fn per_call(iterations: u32, f: &mut dyn FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let large = many_apps(100);
    let inputs = [
        ("reference_canonical", REFERENCE_CANONICAL),
        ("reference_apps", REFERENCE_APPS),
        ("workstation_5k", WORKSTATION),
        ("apps_100", large.as_str()),
    ];
    println!(
        "{:<20} {:>8} {:>12} {:>12} {:>8}",
        "input", "bytes", "raw", "pipeline", "ratio"
    );
    for (name, text) in inputs {
        let mut raw = || {
            black_box(
                serde_yaml::from_str::<serde_yaml::Value>(black_box(text)).expect("valid YAML"),
            );
        };
        let mut pipeline = || {
            black_box(
                Template::from_yaml(black_box(text))
                    .expect("a valid template")
                    .digest(),
            );
        };
        // Size the batches to about 2 ms each, after a warm-up.
        let warm = per_call(50, &mut pipeline);
        let iterations =
            (Duration::from_millis(2).as_nanos() / warm.as_nanos().max(1)).clamp(1, 100_000) as u32;
        let (mut raws, mut pipelines, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let r = per_call(iterations, &mut raw).as_secs_f64();
            let p = per_call(iterations, &mut pipeline).as_secs_f64();
            raws.push(r);
            pipelines.push(p);
            ratios.push(p / r);
        }
        println!(
            "{name:<20} {:>8} {:>10.1}us {:>10.1}us {:>7.2}x",
            text.len(),
            median(&mut raws) * 1e6,
            median(&mut pipelines) * 1e6,
            median(&mut ratios)
        );
    }
}
