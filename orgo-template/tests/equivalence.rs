//! The digest contract: two documents that mean the same thing share a digest
//! (sugar or canonical, YAML or JSON, key order, comments, quoting, style,
//! duration spelling, written-out defaults, vars), and any change of meaning
//! changes it.

use orgo_template::{Format, Template, TemplateError};

/// Parses a document (format detected from the text) or fails with every diagnostic.
fn parse(text: &str) -> Template {
    Template::parse(text, Format::detect(None, text)).unwrap_or_else(|e: TemplateError| {
        let rendered: Vec<String> = e.diagnostics().iter().map(ToString::to_string).collect();
        panic!("document rejected:\n{}\n---\n{text}", rendered.join("\n"))
    })
}

/// Asserts that every document has the digest (and canonical JSON) of the first.
#[track_caller]
fn same(documents: &[&str]) {
    let first = parse(documents[0]);
    for other in &documents[1..] {
        let template = parse(other);
        assert_eq!(
            template.canonical_json(),
            first.canonical_json(),
            "canonical forms differ:\n---\n{}\n---\n{other}",
            documents[0]
        );
        assert_eq!(template.digest(), first.digest());
    }
}

/// Asserts that the two documents have different digests.
#[track_caller]
fn different(a: &str, b: &str) {
    let (x, y) = (parse(a), parse(b));
    assert_ne!(
        x.digest(),
        y.digest(),
        "same digest for different meanings:\n{}\n---\n{a}\n---\n{b}",
        x.canonical_json()
    );
}

/// `extra` appended to a fixed `api_version` and identity.
fn doc(extra: &str) -> String {
    format!("api_version: orgo.ai/v1\ntemplate: {{ name: demo, version: 1.0.0 }}\n{extra}")
}

// ------------------------------------------------------------ sugar rows ----

#[test]
fn sugar_name() {
    same(&[
        "api_version: orgo.ai/v1\nname: foo@1.0.0\n",
        "api_version: orgo.ai/v1\ntemplate: { name: foo, version: 1.0.0 }\n",
        "api_version: orgo.ai/v1\ntemplate:\n  name: foo\n  version: 1.0.0\n",
    ]);
}

#[test]
fn sugar_cpu() {
    same(&[&doc("cpu: 2\n"), &doc("hardware: { cpu: 2 }\n")]);
}

#[test]
fn sugar_ram_in_every_spelling() {
    same(&[
        &doc("hardware: { ram_gb: 4 }\n"),
        &doc("ram: 4gb\n"),
        &doc("ram: 4GB\n"),
        &doc("ram: 4g\n"),
        &doc("ram: 4GiB\n"),
        &doc("ram: 4 gb\n"),
        &doc("ram: 4\n"),
        &doc("ram: \"4\"\n"),
    ]);
}

#[test]
fn sugar_display() {
    same(&[
        &doc("display: 1280x800\n"),
        &doc("hardware: { resolution: 1280x800x24 }\n"),
        &doc("display: 1280x800x24\n"),
    ]);
}

#[test]
fn sugar_wallpaper() {
    same(&[
        &doc("wallpaper: \"https://example.com/bg.png\"\n"),
        &doc("desktop: { wallpaper: \"https://example.com/bg.png\" }\n"),
    ]);
}

#[test]
fn sugar_files() {
    same(&[
        &doc("files: { /path: \"text\" }\n"),
        &doc("files: [{ to: /path, inline: \"text\" }]\n"),
        &doc("files:\n  - to: /path\n    inline: text\n    when: build\n"),
    ]);
    same(&[
        &doc("files:\n  /a: one\n  /b: two\n"),
        &doc("files:\n  - { to: /a, inline: one }\n  - { to: /b, inline: two }\n"),
    ]);
}

#[test]
fn sugar_on_first_boot() {
    same(&[
        &doc("on_first_boot: |\n  echo \"ready\"\n"),
        &doc("hooks: { on_first_boot: \"echo \\\"ready\\\"\\n\" }\n"),
        &doc("hooks:\n  on_first_boot: |\n    echo \"ready\"\n"),
    ]);
}

#[test]
fn all_sugar_rows_together_and_mixed_with_canonical() {
    let canonical = "\
api_version: orgo.ai/v1
template: { name: foo, version: 1.0.0, description: mixed }
hardware: { cpu: 2, ram_gb: 4, resolution: 1280x800x24, region: sjc }
desktop: { wallpaper: \"https://example.com/bg.png\" }
files: [{ to: /opt/a, inline: a }]
hooks: { on_first_boot: echo first, on_resume: echo resume }
";
    let sugar = "\
api_version: orgo.ai/v1
name: foo@1.0.0
template: { description: mixed }
cpu: 2
ram: 4gb
display: 1280x800
hardware: { region: sjc }
wallpaper: \"https://example.com/bg.png\"
files: { /opt/a: a }
on_first_boot: echo first
hooks: { on_resume: echo resume }
";
    let mixed = "\
api_version: orgo.ai/v1
name: foo@1.0.0
template: { description: mixed }
cpu: 2
hardware: { ram_gb: 4, region: sjc }
display: 1280x800
desktop: { wallpaper: \"https://example.com/bg.png\" }
files: [{ to: /opt/a, inline: a }]
on_first_boot: echo first
hooks: { on_resume: echo resume }
";
    same(&[canonical, sugar, mixed]);
}

// ------------------------------------------------------- representation ----

const REFERENCE_YAML: &str = "\
api_version: orgo.ai/v1
template:
  name: my-workstation
  version: 1.0.0
hardware:
  cpu: 2
  ram_gb: 4
  resolution: 1280x800x24
env:
  NODE_ENV: production
files:
  - to: /opt/welcome.txt
    inline: \"hello\"
hooks:
  on_first_boot: |
    echo \"ready\"
";

#[test]
fn yaml_and_json_of_the_same_document() {
    let json = r#"{
  "api_version": "orgo.ai/v1",
  "template": { "name": "my-workstation", "version": "1.0.0" },
  "hardware": { "cpu": 2, "ram_gb": 4, "resolution": "1280x800x24" },
  "env": { "NODE_ENV": "production" },
  "files": [ { "to": "/opt/welcome.txt", "inline": "hello" } ],
  "hooks": { "on_first_boot": "echo \"ready\"\n" }
}"#;
    let compact = r#"{"api_version":"orgo.ai/v1","template":{"name":"my-workstation","version":"1.0.0"},"hardware":{"cpu":2,"ram_gb":4,"resolution":"1280x800x24"},"env":{"NODE_ENV":"production"},"files":[{"to":"/opt/welcome.txt","inline":"hello"}],"hooks":{"on_first_boot":"echo \"ready\"\n"}}"#;
    let escaped = r#"{"api_version":"orgo.ai\/v1","template":{"name":"my-workstation","version":"1.0.0"},"hardware":{"cpu":2,"ram_gb":4,"resolution":"1280x800x24"},"env":{"NODE_ENV":"\u0070roduction"},"files":[{"to":"/opt/welcome.txt","inline":"hello"}],"hooks":{"on_first_boot":"echo \u0022ready\u0022\u000a"}}"#;
    same(&[REFERENCE_YAML, json, compact, escaped]);
    // The canonical JSON is itself a JSON document of the same template.
    let canonical = parse(REFERENCE_YAML).canonical_json();
    same(&[REFERENCE_YAML, &canonical]);
}

#[test]
fn yaml_and_json_of_the_apps_example() {
    let yaml = "\
api_version: orgo.ai/v1
template: { name: my-app, version: 1.0.0 }
apps:
  - name: my-app
    services:
      - name: my-app-server
        run: \"my-app serve --port 8000\"
        user: root
        env: { PORT: \"8000\" }
    health:
      type: http
      url: http://127.0.0.1:8000/health
      on_fail: restart_service:my-app-server
    ports:
      - { internal: 8000, public: true }
";
    let json = r#"{"api_version":"orgo.ai/v1","template":{"name":"my-app","version":"1.0.0"},
      "apps":[{"name":"my-app",
        "services":[{"name":"my-app-server","run":"my-app serve --port 8000","user":"root","env":{"PORT":"8000"}}],
        "health":{"type":"http","url":"http://127.0.0.1:8000/health","on_fail":"restart_service:my-app-server"},
        "ports":[{"internal":8000,"public":true}]}]}"#;
    same(&[yaml, json]);
}

#[test]
fn key_order_does_not_matter() {
    let shuffled = "\
hooks:
  on_first_boot: |
    echo \"ready\"
files:
  - inline: \"hello\"
    to: /opt/welcome.txt
env:
  NODE_ENV: production
hardware:
  resolution: 1280x800x24
  ram_gb: 4
  cpu: 2
template:
  version: 1.0.0
  name: my-workstation
api_version: orgo.ai/v1
";
    same(&[REFERENCE_YAML, shuffled]);
    same(&[
        &doc("env:\n  A: one\n  B: two\n  C: three\n"),
        &doc("env:\n  C: three\n  A: one\n  B: two\n"),
    ]);
}

#[test]
fn comments_do_not_matter() {
    let commented = "\
# A workstation.
# yaml-language-server: $schema=https://www.orgo.ai/api/template-schema
api_version: orgo.ai/v1   # the only version
template:
  # identity
  name: my-workstation    # kebab-case
  version: 1.0.0
hardware:
  cpu: 2
  ram_gb: 4               # GB
  resolution: 1280x800x24
env:
  NODE_ENV: production
files:
  # one file
  - to: /opt/welcome.txt
    inline: \"hello\"     # quoted
hooks:
  on_first_boot: |
    echo \"ready\"
# trailing comment
";
    same(&[REFERENCE_YAML, commented]);
}

#[test]
fn quoting_styles_of_one_string() {
    same(&[
        &doc("env: { GREETING: hello world }\n"),
        &doc("env: { GREETING: 'hello world' }\n"),
        &doc("env: { GREETING: \"hello world\" }\n"),
        &doc("env:\n  GREETING: |-\n    hello world\n"),
        &doc("env:\n  GREETING: >-\n    hello\n    world\n"),
        &doc("env:\n  GREETING: \"hello\\x20world\"\n"),
        &doc("env:\n  GREETING: \"hello \\\n    world\"\n"),
        &doc("env:\n  GREETING:\n    hello\n    world\n"),
    ]);
    // Quoting keeps a string that would otherwise read as another type.
    same(&[
        &doc("env: { VERSION: '1.10', FLAG: 'true' }\n"),
        &doc("env: { VERSION: \"1.10\", FLAG: \"true\" }\n"),
    ]);
    // `yes` is a plain string under YAML 1.2.
    same(&[
        &doc("env: { ANSWER: yes }\n"),
        &doc("env: { ANSWER: \"yes\" }\n"),
    ]);
    same(&[
        &doc("files: [{ to: /opt/x, inline: x, mode: \"0755\" }]\n"),
        &doc("files: [{ to: /opt/x, inline: x, mode: '0755' }]\n"),
    ]);
}

#[test]
fn flow_and_block_style() {
    let flow = "{api_version: orgo.ai/v1, template: {name: my-workstation, version: 1.0.0}, \
        hardware: {cpu: 2, ram_gb: 4, resolution: 1280x800x24}, env: {NODE_ENV: production}, \
        files: [{to: /opt/welcome.txt, inline: hello}], hooks: {on_first_boot: \"echo \\\"ready\\\"\\n\"}}";
    // Without a file name, text starting with `{` is taken for JSON, so say YAML
    // here; after `---` detection sees YAML by itself.
    let from_yaml = Template::from_yaml(flow).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from_yaml.digest(), parse(REFERENCE_YAML).digest());
    same(&[REFERENCE_YAML, &format!("---\n{flow}\n")]);
    same(&[
        &doc("build:\n  apt: [ffmpeg, ripgrep]\n  run: [\"make\", \"make install\"]\n"),
        &doc(
            "build:\n  apt:\n    - ffmpeg\n    - ripgrep\n  run:\n    - make\n    - make install\n",
        ),
    ]);
}

#[test]
fn line_endings_and_byte_order_mark() {
    let crlf = REFERENCE_YAML.replace('\n', "\r\n");
    let bom = format!("\u{feff}{REFERENCE_YAML}");
    same(&[REFERENCE_YAML, &crlf, &bom]);
}

#[test]
fn anchors_and_aliases_equal_the_written_out_values() {
    let aliased = "\
api_version: orgo.ai/v1
template: { name: demo, version: 1.0.0 }
apps:
  - name: one
    services: [{ name: one-server, run: &run ./serve, env: &env { LOG: info } }]
    health: &health { type: process, process: serve }
  - name: two
    services: [{ name: two-server, run: *run, env: *env }]
    health: *health
";
    let written = "\
api_version: orgo.ai/v1
template: { name: demo, version: 1.0.0 }
apps:
  - name: one
    services: [{ name: one-server, run: ./serve, env: { LOG: info } }]
    health: { type: process, process: serve }
  - name: two
    services: [{ name: two-server, run: ./serve, env: { LOG: info } }]
    health: { type: process, process: serve }
";
    same(&[aliased, written]);
}

#[test]
fn absent_null_and_empty_sections_are_the_same() {
    same(&[
        &doc(""),
        &doc("hardware: ~\n"),
        &doc("hardware: {}\n"),
        &doc("env: {}\nfiles: []\nsecrets: []\nvars: {}\n"),
        &doc("build: { apt: [], run: [] }\n"),
        &doc("hooks: {}\nhardware: { os: linux, audio: false }\n"),
    ]);
}

// ---------------------------------------------------------------- values ----

fn health(fields: &str) -> String {
    doc(&format!(
        "apps:\n  - name: web\n    services: [{{ name: web-server, run: ./serve }}]\n    health: {{ type: process, process: serve{fields} }}\n"
    ))
}

#[test]
fn duration_spellings() {
    same(&[
        &health(", every: 60s"),
        &health(", every: 1m"),
        &health(", every: 60"),
        &health(", every: 60000ms"),
    ]);
    same(&[
        &health(", every: 1h30m"),
        &health(", every: 90m"),
        &health(", every: 5400s"),
    ]);
    same(&[&health(", timeout: 1500ms"), &health(", timeout: 1s500ms")]);
    let autostart = |delay: &str| {
        doc(&format!(
            "apps:\n  - name: web\n    autostart: [{{ run: firefox{delay} }}]\n"
        ))
    };
    same(&[
        &autostart(", delay: 3"),
        &autostart(", delay: 3s"),
        &autostart(", delay: 3000ms"),
    ]);
    same(&[
        &autostart(""),
        &autostart(", delay: 0"),
        &autostart(", delay: 0s"),
    ]);
    let dedup = |d: &str| {
        doc(&format!(
            "triggers: [{{ name: t, source: {{ type: webhook, path: /t }}, actions: [{{ run: x }}], dedup: {d} }}]\n"
        ))
    };
    same(&[&dedup("120s"), &dedup("2m"), &dedup("120")]);
}

#[test]
fn defaults_written_or_omitted() {
    let service = |extra: &str| {
        doc(&format!(
            "apps:\n  - name: web\n    services:\n      - name: web-server\n        run: ./serve\n{extra}"
        ))
    };
    same(&[
        &service(""),
        &service("        restart: always\n"),
        &service("        user: orgo\n"),
        &service("        stop_signal: TERM\n"),
        &service("        stop_signal: SIGTERM\n"),
        &service(
            "        restart: always\n        user: orgo\n        stop_signal: TERM\n        env: {}\n",
        ),
    ]);
    same(&[
        &health(""),
        &health(", every: 15s, timeout: 3s, retries: 3, on_fail: none"),
    ]);
    let tcp = |extra: &str| {
        doc(&format!(
            "apps:\n  - name: db\n    health: {{ type: tcp, port: 5432{extra} }}\n"
        ))
    };
    same(&[&tcp(""), &tcp(", host: 127.0.0.1")]);
    let port = |extra: &str| {
        doc(&format!(
            "apps:\n  - name: web\n    ports: [{{ internal: 3000{extra} }}]\n"
        ))
    };
    same(&[
        &port(""),
        &port(", external: 0, protocol: tcp, public: false"),
    ]);
    same(&[
        &doc("files: [{ to: /opt/x, inline: x }]\n"),
        &doc("files: [{ to: /opt/x, inline: x, when: build }]\n"),
    ]);
    same(&[
        &doc("secrets: [{ name: key }]\n"),
        &doc("secrets: [{ name: key, required: true }]\n"),
    ]);
    same(&[
        &doc(""),
        &doc("hardware: { os: linux }\n"),
        &doc("hardware: { audio: false }\n"),
    ]);
    let stream = |extra: &str| {
        doc(&format!(
            "streaming: [{{ name: live, url: \"rtmps://ingest.example.com/app\"{extra} }}]\n"
        ))
    };
    same(&[&stream(""), &stream(", autostart: false")]);
    let watch = |extra: &str| {
        doc(&format!(
            "triggers: [{{ name: t, source: {{ type: file, path: /opt/x{extra} }}, actions: [{{ run: x }}] }}]\n"
        ))
    };
    same(&[
        &watch(""),
        &watch(", events: [create, modify, delete]"),
        &watch(", events: [delete, create, modify, create]"),
    ]);
    same(&[
        &doc("telemetry: {}\n"),
        &doc("telemetry: { metrics: false, logs: [] }\n"),
    ]);
}

/// The crate docs: "empty sections are omitted". A `telemetry` section that
/// sets nothing means the same as no section.
#[test]
fn empty_telemetry_section_is_omitted() {
    same(&[
        &doc(""),
        &doc("telemetry: {}\n"),
        &doc("telemetry: { metrics: false }\n"),
    ]);
}

#[test]
fn one_spelling_of_each_value() {
    let mode = |m: &str| {
        doc(&format!(
            "files: [{{ to: /opt/x, inline: x, mode: \"{m}\" }}]\n"
        ))
    };
    same(&[&mode("0644"), &mode("644"), &mode("0o644")]);
    let to = |t: &str| doc(&format!("files: [{{ to: \"{t}\", inline: x }}]\n"));
    same(&[&to("/opt/app/x"), &to("//opt/app/x"), &to("/opt/./app//x")]);
    let rules = |r: &str| doc(&format!("egress_policy: {{ mode: allow, rules: [{r}] }}\n"));
    same(&[
        &rules("\"*.github.com\", \"10.0.0.0/8\""),
        &rules("\"*.GitHub.COM\", \"10.1.2.3/8\""),
    ]);
    let url = |u: &str| doc(&format!("telemetry: {{ otel_endpoint: \"{u}\" }}\n"));
    same(&[
        &url("https://otel.example.com"),
        &url("https://otel.example.com/"),
        &url("HTTPS://OTEL.Example.com:443/"),
    ]);
    let hardware = |h: &str| doc(&format!("hardware: {{ {h} }}\n"));
    same(&[
        &hardware("cpu: 4, ram_gb: 16"),
        &hardware("cpu: 0x4, ram_gb: 0o20"),
        &hardware("cpu: +4, ram_gb: 16"),
    ]);
}

#[test]
fn vars_used_or_inlined() {
    let with_vars = "\
api_version: orgo.ai/v1
template: { name: demo, version: 1.0.0 }
vars:
  region: sjc2
  tag: v7
  image: \"app:${var.tag}\"
env:
  REGION: \"${var.region}\"
  URL: \"https://${env.REGION}.example.com\"
files:
  - to: /opt/config
    inline: \"region=${var.region} tag=${var.tag} image=${var.image}\"
build:
  run: [\"echo ${env.URL}\"]
";
    let inlined = "\
api_version: orgo.ai/v1
template: { name: demo, version: 1.0.0 }
env:
  REGION: sjc2
  URL: https://sjc2.example.com
files:
  - to: /opt/config
    inline: region=sjc2 tag=v7 image=app:v7
build:
  run: [echo https://sjc2.example.com]
";
    same(&[with_vars, inlined]);
    // Unused vars leave no trace.
    same(&[&doc(""), &doc("vars: { unused: value }\n")]);
    // A shell `${HOME}` is not interpolated.
    same(&[
        &doc("vars: { h: \"${HOME}\" }\nenv: { HOME_DIR: \"${var.h}\" }\n"),
        &doc("env: { HOME_DIR: \"${HOME}\" }\n"),
    ]);
}

#[test]
fn escaped_reference_is_a_literal() {
    // `$${var.x}` is the text `${var.x}`, not the value of `x`.
    let escaped = doc("vars: { x: value }\nhooks: { on_resume: \"echo $${var.x}\" }\n");
    let resolved = doc("vars: { x: value }\nhooks: { on_resume: \"echo ${var.x}\" }\n");
    different(&escaped, &resolved);
    let template = parse(&escaped);
    assert_eq!(
        template.hooks().on_resume.as_deref(),
        Some("echo ${var.x}"),
        "{}",
        template.canonical_json()
    );
}

// --------------------------------------------------------- inequalities ----

#[test]
fn any_change_of_meaning_changes_the_digest() {
    let base = "\
api_version: orgo.ai/v1
template: { name: demo, version: 1.0.0 }
hardware: { cpu: 2 }
secrets: [{ name: key }]
env: { MODE: prod, KEY: { secret: key } }
build:
  run: [make, make install]
files:
  - { to: /opt/x, inline: \"x\\n\", mode: \"0644\" }
apps:
  - name: web
    services: [{ name: web-server, run: ./serve --port 3000 }]
    ports: [{ internal: 3000 }]
hooks: { on_first_boot: echo ready }
";
    let changes: &[(&str, &str)] = &[
        ("./serve --port 3000 }", "./serve --port 3001 }"),
        ("ports: [{ internal: 3000 }]", "ports: [{ internal: 3001 }]"),
        (
            "ports: [{ internal: 3000 }]",
            "ports: [{ internal: 3000, protocol: udp }]",
        ),
        (
            "ports: [{ internal: 3000 }]",
            "ports: [{ internal: 3000, public: true }]",
        ),
        ("run: [make, make install]", "run: [make install, make]"),
        ("run: [make, make install]", "run: [make, make  install]"),
        ("run: [make, make install]", "run: [make]"),
        ("echo ready", "echo Ready"),
        ("version: 1.0.0", "version: 1.0.1"),
        ("name: demo", "name: demo2"),
        ("cpu: 2", "cpu: 4"),
        ("MODE: prod", "MODE: \"prod \""),
        ("MODE: prod", "MODE_: prod"),
        ("{ name: key }", "{ name: key, required: false }"),
        ("inline: \"x\\n\"", "inline: \"x\""),
        ("mode: \"0644\"", "mode: \"0640\""),
        ("mode: \"0644\" }", "mode: \"0644\", when: runtime }"),
        ("to: /opt/x", "to: ~/opt/x"),
        ("--port 3000 }", "--port 3000, restart: on-failure }"),
        ("--port 3000 }", "--port 3000, user: root }"),
        ("--port 3000 }", "--port 3000, stop_signal: INT }"),
    ];
    for (from, to) in changes {
        assert!(base.contains(from), "{from}");
        different(base, &base.replacen(from, to, 1));
    }
}

#[test]
fn list_order_is_meaning() {
    different(
        &doc("files: [{ to: /a, inline: a }, { to: /b, inline: b }]\n"),
        &doc("files: [{ to: /b, inline: b }, { to: /a, inline: a }]\n"),
    );
    different(
        &doc("egress_policy: { mode: allow, rules: [a.com, b.com] }\n"),
        &doc("egress_policy: { mode: allow, rules: [b.com, a.com] }\n"),
    );
    different(
        &doc("apps: [{ name: a }, { name: b }]\n"),
        &doc("apps: [{ name: b }, { name: a }]\n"),
    );
}

#[test]
fn block_scalar_chomping_is_meaning() {
    // `|` keeps the final newline, `|-` strips it: different text, different digest.
    different(
        &doc("hooks:\n  on_resume: |\n    echo hi\n"),
        &doc("hooks:\n  on_resume: |-\n    echo hi\n"),
    );
    // `|` keeps line breaks, `>` folds them into spaces.
    different(
        &doc("hooks:\n  on_resume: |\n    echo a\n    echo b\n"),
        &doc("hooks:\n  on_resume: >\n    echo a\n    echo b\n"),
    );
}

#[test]
fn sugar_and_canonical_disagreeing_values_differ() {
    different(&doc("cpu: 2\n"), &doc("hardware: { cpu: 4 }\n"));
    different(&doc("display: 1280x800\n"), &doc("display: 1280x800x16\n"));
    different(
        &doc("files: { /opt/a: a }\n"),
        &doc("files: [{ to: /opt/a, inline: a, when: runtime }]\n"),
    );
}

#[test]
fn yaml_and_json_agree_on_format_detection() {
    // Format::detect: `.json` names, else text starting with `{`.
    assert_eq!(Format::detect(Some("t.json"), "a: 1"), Format::Json);
    assert_eq!(Format::detect(Some("t.yaml"), "{}"), Format::Yaml);
    assert_eq!(Format::detect(Some("t.YML"), "{}"), Format::Yaml);
    assert_eq!(Format::detect(None, "  \n{\"a\": 1}"), Format::Json);
    assert_eq!(Format::detect(None, "\u{feff}{\"a\": 1}"), Format::Json);
    assert_eq!(Format::detect(None, "a: 1"), Format::Yaml);
}

#[test]
fn sugar_values_may_use_vars() {
    let with_vars = "api_version: orgo.ai/v1\nvars: {n: \"x@1.0.0\", r: 4gb, d: 1280x800}\nname: ${var.n}\nram: ${var.r}\ndisplay: ${var.d}\n";
    let written = "api_version: orgo.ai/v1\nname: x@1.0.0\nram: 4gb\ndisplay: 1280x800\n";
    assert_eq!(
        Template::from_yaml(with_vars).unwrap().digest(),
        Template::from_yaml(written).unwrap().digest()
    );
    let err = Template::from_yaml("api_version: orgo.ai/v1\nname: ${var.nope}\n").unwrap_err();
    let lines: Vec<String> = err
        .diagnostics()
        .iter()
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    assert_eq!(
        lines,
        ["name: unknown reference `${var.nope}`: no such name in vars"]
    );
}

#[test]
fn spellings_of_one_meaning_share_a_digest() {
    let head = "api_version: orgo.ai/v1\nname: x@1.0.0\n";
    let pairs = [
        // cron spacing and name case
        (
            "triggers: [{name: t, source: {type: schedule, cron: \" 5  3 * * MON\"}, actions: [{run: x}]}]",
            "triggers: [{name: t, source: {type: schedule, cron: \"5 3 * * mon\"}, actions: [{run: x}]}]",
        ),
        // a zero dedup window drops nothing
        (
            "triggers: [{name: t, source: {type: webhook, path: /h}, actions: [{run: x}], dedup: 0}]",
            "triggers: [{name: t, source: {type: webhook, path: /h}, actions: [{run: x}]}]",
        ),
        // a /32 is one address
        (
            "egress_policy: {mode: allow, rules: [10.0.0.7/32]}",
            "egress_policy: {mode: allow, rules: [10.0.0.7]}",
        ),
        // gpu: none is no GPU
        ("hardware: {gpu: none}", "hardware: {}"),
        // a watched path is written once
        (
            "triggers: [{name: t, source: {type: file, path: //data/./x}, actions: [{run: x}]}]",
            "triggers: [{name: t, source: {type: file, path: /data/x}, actions: [{run: x}]}]",
        ),
    ];
    for (a, b) in pairs {
        let da = Template::from_yaml(&format!("{head}{a}\n"))
            .unwrap()
            .digest();
        let db = Template::from_yaml(&format!("{head}{b}\n"))
            .unwrap()
            .digest();
        assert_eq!(da, db, "{a}\n  vs\n{b}");
    }
}
