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

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orgo_template::Template;

/// The first YAML block of the schema reference: its canonical form.
const REFERENCE_CANONICAL: &str = include_str!("../data/reference-canonical.yaml");
/// The reference's `apps` example, in a complete document.
const REFERENCE_APPS: &str = include_str!("../data/reference-apps.yaml");
/// A realistic ~5 KB template: apps, services, health checks, files, env, build.
const WORKSTATION: &str = include_str!("../data/workstation.yaml");

/// A template of `apps` apps, each with a service, a health check, two ports and env.
fn many_apps(apps: usize) -> String {
    let mut text = String::from(
        "api_version: orgo.ai/v1\n\
         name: many-apps@1.0.0\n\
         cpu: 16\n\
         ram: 64gb\n\
         vars:\n  root: /opt/apps\n\
         env:\n  NODE_ENV: production\n\
         apps:\n",
    );
    for i in 0..apps {
        let port = 10_000 + 2 * i;
        let health = match i % 4 {
            0 => format!(
                "      type: http\n      url: http://127.0.0.1:{port}/health\n      on_fail: restart_service:app-{i}-server\n"
            ),
            1 => format!("      type: tcp\n      port: {port}\n      on_fail: alert\n"),
            2 => "      type: command\n      command: test -f /var/run/ready\n".to_owned(),
            _ => {
                format!("      type: process\n      process: app-{i}\n      on_fail: restart_vm\n")
            }
        };
        write!(
            text,
            "  - name: app-{i}\n\
             \x20   title: \"App number {i}\"\n\
             \x20   install: |\n\
             \x20     mkdir -p ${{var.root}}/app-{i}\n\
             \x20     npm install --prefix ${{var.root}}/app-{i} app-{i}@1.2.3\n\
             \x20   services:\n\
             \x20     - name: app-{i}-server\n\
             \x20       run: \"app-{i} serve --port {port}\"\n\
             \x20       cwd: ${{var.root}}/app-{i}\n\
             \x20       restart: on-failure\n\
             \x20       env:\n\
             \x20         PORT: \"{port}\"\n\
             \x20         APP_NAME: app-{i}\n\
             \x20         LOG_LEVEL: info\n\
             \x20   health:\n\
             {health}\
             \x20     every: 30s\n\
             \x20     timeout: 5s\n\
             \x20     retries: 3\n\
             \x20   ports:\n\
             \x20     - {{ internal: {port}, public: true }}\n\
             \x20     - {{ internal: {metrics}, protocol: http }}\n",
            metrics = port + 1,
        )
        .expect("writing to a String does not fail");
    }
    text
}

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
