//! Time per call of `Template::from_yaml(text)` + `digest()`, the Rust side of
//! the Python binding's benchmark (`orgo-py/bench/digest.py` runs it between
//! its own rounds, so both are measured in the same stretch of a noisy machine).
//!
//! Usage: `per_call [--millis N] [FILE...]`. For each file (by default the
//! benches' reference and workstation inputs) it prints `NAME NANOS`: the
//! median time per call over batches of about 2 ms, for about N ms (200).
//! Run with `cargo bench -p orgo-benches --bench per_call`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use orgo_benches::{REFERENCE_APPS, REFERENCE_CANONICAL, WORKSTATION};
use orgo_template::Template;

fn digest(text: &str) {
    black_box(
        Template::from_yaml(black_box(text))
            .expect("a valid template")
            .digest(),
    );
}

/// Median nanoseconds per call over batches of about 2 ms, for about `total`.
fn per_call_nanos(text: &str, total: Duration) -> f64 {
    let warm = Instant::now();
    for _ in 0..20 {
        digest(text);
    }
    let one = warm.elapsed() / 20;
    let batch = (Duration::from_millis(2).as_nanos() / one.as_nanos().max(1)).clamp(1, 100_000);
    let batch = u32::try_from(batch).expect("clamped to 100000");
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < total || samples.len() < 5 {
        let t = Instant::now();
        for _ in 0..batch {
            digest(text);
        }
        samples.push(t.elapsed().as_secs_f64() * 1e9 / f64::from(batch));
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let mut millis = 200;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--millis" => {
                millis = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--millis takes a number");
            }
            // `cargo bench` passes `--bench`.
            flag if flag.starts_with("--") => {}
            file => files.push(file.to_owned()),
        }
    }
    let inputs: Vec<(String, String)> = if files.is_empty() {
        [
            ("reference_canonical", REFERENCE_CANONICAL),
            ("reference_apps", REFERENCE_APPS),
            ("workstation_5k", WORKSTATION),
        ]
        .into_iter()
        .map(|(name, text)| (name.to_owned(), text.to_owned()))
        .collect()
    } else {
        files
            .into_iter()
            .map(|file| {
                let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
                (file, text)
            })
            .collect()
    };
    for (name, text) in &inputs {
        let nanos = per_call_nanos(text, Duration::from_millis(millis));
        println!("{name} {nanos:.0}");
    }
}
