//! The template pipeline against the floor of reading the same YAML.
//!
//! For each input, `raw_serde_yaml_value` is `serde_yaml::from_str::<Value>`
//! (reading YAML and nothing else) and `pipeline` is `Template::from_yaml`
//! (parse, normalize, interpolate, validate) then `digest()`. The target is a
//! pipeline within 1.3x of the raw parse, and under 1 ms for the ~5 KB
//! workstation template.
//!
//! Inputs: the reference's canonical example, the reference's apps example, a
//! realistic ~5 KB workstation (`data/workstation.yaml`) and a generated
//! template of 100 apps.
//!
//! Run with `cargo bench -p orgo-benches --bench template`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orgo_benches::{REFERENCE_APPS, REFERENCE_CANONICAL, WORKSTATION, many_apps};
use orgo_template::Template;

fn bench_template(c: &mut Criterion) {
    let large = many_apps(100);
    let inputs: [(&str, &str); 4] = [
        ("reference_canonical", REFERENCE_CANONICAL),
        ("reference_apps", REFERENCE_APPS),
        ("workstation_5k", WORKSTATION),
        ("apps_100", &large),
    ];

    println!("input sizes:");
    for (name, text) in &inputs {
        // Every input must be a valid template, or the pipeline would measure an error path.
        let template =
            Template::from_yaml(text).unwrap_or_else(|error| panic!("{name} is invalid: {error}"));
        println!(
            "  {name:<20} {:>7} bytes  {}",
            text.len(),
            template.digest()
        );
    }

    for (name, text) in inputs {
        let mut group = c.benchmark_group(name);
        group
            .throughput(Throughput::Bytes(text.len() as u64))
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        group.bench_function("raw_serde_yaml_value", |b| {
            b.iter(|| serde_yaml::from_str::<serde_yaml::Value>(black_box(text)))
        });
        group.bench_function("pipeline", |b| {
            b.iter(|| {
                Template::from_yaml(black_box(text))
                    .expect("a valid template")
                    .digest()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_template);
criterion_main!(benches);
