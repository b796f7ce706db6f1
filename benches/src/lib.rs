//! Inputs shared by the benchmarks in `benches/`.

use std::fmt::Write as _;

/// The first YAML block of the schema reference: its canonical form.
pub const REFERENCE_CANONICAL: &str = include_str!("../data/reference-canonical.yaml");
/// The reference's `apps` example, in a complete document.
pub const REFERENCE_APPS: &str = include_str!("../data/reference-apps.yaml");
/// A realistic ~5 KB template: apps, services, health checks, files, env, build.
pub const WORKSTATION: &str = include_str!("../data/workstation.yaml");

/// A template of `apps` apps, each with a service, a health check, two ports and env.
pub fn many_apps(apps: usize) -> String {
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
