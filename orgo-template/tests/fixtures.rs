//! Every fixture under `tests/fixtures`: valid ones parse and are stable under
//! their own canonical form; invalid ones fail with every problem reported at
//! the expected paths, and their full diagnostics are snapshot-tested.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use orgo_template::{Format, Template, TemplateError};

/// Fixtures of one kind (`valid` or `invalid`), sorted by name.
fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures in {}", dir.display());
    paths
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("fixture names are UTF-8")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a fixture in the format its extension names.
fn parse(path: &Path) -> Result<Template, TemplateError> {
    let text = read(path);
    Template::parse(&text, Format::detect(Some(file_name(path)), &text))
}

/// One diagnostic a line: `{path} ({line}:{col}): {message}`.
fn render(error: &TemplateError) -> String {
    error
        .diagnostics()
        .iter()
        .map(|d| match d.location {
            Some(at) => format!("{} ({}:{}): {}", d.path, at.line, at.column, d.message),
            None => format!("{} (no location): {}", d.path, d.message),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fails with every collected problem at once, so one run shows them all.
fn report(what: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} fixture(s) {what}:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------- valid ----

#[test]
fn every_valid_fixture_parses() {
    let mut failures = Vec::new();
    for path in fixtures("valid") {
        if let Err(error) = parse(&path) {
            failures.push(format!("{}:\n{}", file_name(&path), render(&error)));
        }
    }
    report("were rejected", failures);
}

/// `Template::from_json(&t.canonical_json())` is the same template: the
/// canonical form is a fixed point, so re-reading it keeps the digest.
#[test]
fn valid_fixtures_are_stable_under_their_canonical_json() {
    let mut failures = Vec::new();
    for path in fixtures("valid") {
        let Ok(template) = parse(&path) else { continue };
        let canonical = template.canonical_json();
        match Template::from_json(&canonical) {
            Ok(again) if again.digest() == template.digest() => {
                assert_eq!(again.canonical_json(), canonical, "{}", file_name(&path));
            }
            Ok(again) => failures.push(format!(
                "{}: digest changed\n  first:  {canonical}\n  second: {}",
                file_name(&path),
                again.canonical_json()
            )),
            Err(error) => failures.push(format!(
                "{}: canonical JSON does not parse\n  {canonical}\n{}",
                file_name(&path),
                render(&error)
            )),
        }
    }
    report("changed under from_json(canonical_json())", failures);
}

/// `Template::to_yaml` output reads back as the same template.
#[test]
fn valid_fixtures_are_stable_under_to_yaml() {
    let mut failures = Vec::new();
    for path in fixtures("valid") {
        let Ok(template) = parse(&path) else { continue };
        let yaml = template.to_yaml();
        match Template::from_yaml(&yaml) {
            Ok(again) if again.digest() == template.digest() => {}
            Ok(again) => failures.push(format!(
                "{}: digest changed\n  first:  {}\n  second: {}",
                file_name(&path),
                template.canonical_json(),
                again.canonical_json()
            )),
            Err(error) => failures.push(format!(
                "{}: to_yaml() output does not parse\n{}",
                file_name(&path),
                render(&error)
            )),
        }
    }
    report("changed under from_yaml(to_yaml())", failures);
}

#[test]
fn valid_fixture_digests_are_deterministic() {
    for path in fixtures("valid") {
        let Ok(first) = parse(&path) else { continue };
        let second = parse(&path).expect("parsed once already");
        assert_eq!(first.digest(), second.digest(), "{}", file_name(&path));
        let digest = first.digest().to_string();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 7 + 64,
            "{}: {digest}",
            file_name(&path)
        );
    }
}

/// The reference's examples written in both forms and both formats are one template.
#[test]
fn equivalent_valid_fixtures_share_a_digest() {
    let digest = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/valid")
            .join(name);
        parse(&path)
            .unwrap_or_else(|e| panic!("{name}:\n{}", render(&e)))
            .digest()
    };
    for group in [
        &[
            "canonical-form.yaml",
            "canonical-form.json",
            "sugar-form.yaml",
            "sugar-form.json",
        ][..],
        &["apps.yaml", "apps.json"],
        &["wallpaper-sugar.yaml", "wallpaper-canonical.yaml"],
    ] {
        let first = digest(group[0]);
        for name in &group[1..] {
            assert_eq!(digest(name), first, "{name} vs {}", group[0]);
        }
    }
}

// -------------------------------------------------------------- invalid ----

/// Every invalid fixture and the path of every problem it must report, in
/// source order. A path ending in `...` matches by prefix.
const INVALID: &[(&str, &[&str])] = &[
    ("api-version-missing.yaml", &["api_version"]),
    (
        "review-gaps.yaml",
        &[
            "files[0].from",
            "files[1].to",
            "files[2].to",
            "apps[0].health.host",
            "triggers[0].source.events",
        ],
    ),
    (
        "no-follow-on-errors.yaml",
        &["vars.port", "secrets[1]", "apps[0]"],
    ),
    ("api-version-wrong.yaml", &["api_version"]),
    ("audio-yes.yaml", &["hardware.audio"]),
    (
        "autostart-bad.yaml",
        &[
            "apps[0].autostart[0].run",
            "apps[0].autostart[1].delay",
            "apps[0].autostart[2].run",
            "apps[0].autostart[2].delay",
        ],
    ),
    (
        "build-bad-steps.yaml",
        &[
            "build.apt[1]",
            "build.pip[0]",
            "build.pip[1]",
            "build.npm[0]",
            "build.run[1]",
        ],
    ),
    ("build-run-over-64.yaml", &["build.run"]),
    ("desktop-wallpaper-bad-scheme.yaml", &["desktop.wallpaper"]),
    (
        "desktop-wallpaper-missing.yaml",
        &["desktop.theme", "desktop.wallpaper"],
    ),
    ("duplicate-key-env.json", &["env.NODE_ENV"]),
    ("duplicate-key-env.yaml", &["env.NODE_ENV"]),
    ("duplicate-key-struct.json", &["template.name"]),
    ("duplicate-key-struct.yaml", &["hardware.cpu"]),
    ("duplicate-key-top-level.yaml", &["api_version"]),
    ("duplicate-key-vars.json", &["vars.region"]),
    ("duplicate-key-vars.yaml", &["vars.region"]),
    ("egress-mode-missing.yaml", &["egress_policy.mode"]),
    ("egress-mode.yaml", &["egress_policy.mode"]),
    (
        "egress-rules.yaml",
        &[
            "egress_policy.rules[1]",
            "egress_policy.rules[2]",
            "egress_policy.rules[3]",
            "egress_policy.rules[4]",
            "egress_policy.rules[5]",
            "egress_policy.rules[6]",
            "egress_policy.rules[7]",
            "egress_policy.rules[8]",
            "egress_policy.rules[9]",
        ],
    ),
    (
        "env-keys-not-upper-snake.yaml",
        &["env.node_env", "env.MY-VAR", "env.1ABC", "env[\"\"]"],
    ),
    ("env-number-value.yaml", &["env.PORT", "env.DEBUG"]),
    (
        "env-secret-ref-shape.yaml",
        &["env.TOKEN", "env.TOKEN.vault", "env.OTHER"],
    ),
    (
        "env-undeclared-secret.yaml",
        &["env.ANTHROPIC_API_KEY.secret"],
    ),
    (
        "files-bad-mode.yaml",
        &["files[0].mode", "files[1].mode", "files[2].mode"],
    ),
    (
        "files-bad-owner.yaml",
        &["files[0].owner", "files[0].group"],
    ),
    (
        "files-bad-scheme.yaml",
        &["files[0].from", "files[1].from", "files[2].from"],
    ),
    ("files-bad-when.yaml", &["files[0].when"]),
    (
        "files-directory-target.yaml",
        &["files[0].to", "files[1].to"],
    ),
    (
        "files-dot-dot.yaml",
        &["files[0].to", "files[1].to", "files[2].to", "files[3].to"],
    ),
    (
        "files-double-slash-reserved.yaml",
        &["files[0].to", "files[1].to"],
    ),
    ("files-from-and-inline.yaml", &["files[0]"]),
    ("files-neither-source.yaml", &["files[0]", "files[1].to"]),
    (
        "files-relative-to.yaml",
        &["files[0].to", "files[1].to", "files[2].to"],
    ),
    (
        "files-reserved-paths.yaml",
        &[
            "files[0].to",
            "files[1].to",
            "files[2].to",
            "files[3].to",
            "files[4].to",
            "files[5].to",
            "files[6].to",
            "files[7].to",
            "files[8].to",
            "files[9].to",
            "files[10].to",
            "files[11].to",
            "files[12].to",
        ],
    ),
    ("files-same-target.yaml", &["files[1].to", "files[2].to"]),
    (
        "files-secret-at-build.yaml",
        &["files[0].from", "files[1].from"],
    ),
    (
        "files-secret-source-bad.yaml",
        &["files[0].from", "files[1].from"],
    ),
    (
        "hardware-bandwidth-negative.yaml",
        &["hardware.bandwidth_mbps"],
    ),
    ("hardware-cpu.yaml", &["hardware.cpu"]),
    (
        "hardware-enums.yaml",
        &["hardware.os", "hardware.gpu", "hardware.region"],
    ),
    ("hardware-gpu-count-gpu-none.yaml", &["hardware.gpu_count"]),
    (
        "hardware-gpu-count-without-gpu.yaml",
        &["hardware.gpu_count"],
    ),
    (
        "hardware-ranges.yaml",
        &[
            "hardware.cpu",
            "hardware.ram_gb",
            "hardware.disk_gb",
            "hardware.gpu_count",
            "hardware.auto_stop_minutes",
        ],
    ),
    (
        "hardware-resolution-bad-depth.yaml",
        &["hardware.resolution"],
    ),
    (
        "hardware-resolution-no-depth.yaml",
        &["hardware.resolution"],
    ),
    ("hardware-resolution-zero.yaml", &["hardware.resolution"]),
    (
        "health-field-values.yaml",
        &[
            "apps[0].health.url",
            "apps[1].health.port",
            "apps[1].health.host",
            "apps[2].health.command",
            "apps[3].health.process",
            "apps[4].health.port",
        ],
    ),
    (
        "health-missing-fields.yaml",
        &[
            "apps[0].health.url",
            "apps[1].health.port",
            "apps[2].health.command",
            "apps[3].health.process",
        ],
    ),
    (
        "health-on-fail.yaml",
        &[
            "apps[0].health.on_fail",
            "apps[1].health.on_fail",
            "apps[2].health.on_fail",
            "apps[3].health.on_fail",
        ],
    ),
    (
        "health-timing.yaml",
        // apps[0] (`every: 500ms`) and apps[6] (`every: 2s`) write no timeout:
        // the default is then `every` itself, so only `every` can be wrong.
        &[
            "apps[0].health.every",
            "apps[1].health.timeout",
            "apps[2].health.timeout",
            "apps[3].health.retries",
            "apps[4].health.retries",
            "apps[5].health.every",
            "apps[5].health.timeout",
        ],
    ),
    (
        "health-type.yaml",
        &["apps[0].health.type", "apps[1].health.type"],
    ),
    (
        "health-wrong-type-fields.yaml",
        &[
            "apps[0].health.url",
            "apps[0].health.command",
            "apps[1].health.host",
            "apps[1].health.process",
        ],
    ),
    ("hooks-bad.yaml", &["hooks.on_boot", "hooks.on_shutdown"]),
    (
        "integer-overflow.yaml",
        &[
            "hardware.disk_gb",
            "hardware.bandwidth_mbps",
            "hardware.gpu_count",
            "hardware.cpu",
        ],
    ),
    ("interpolation-cycle.yaml", &["vars.c", "env.D"]),
    (
        "interpolation-secret-env.yaml",
        &["vars.auth", "env.HEADER", "files[0].inline"],
    ),
    ("interpolation-self-reference.yaml", &["vars.a"]),
    (
        "interpolation-syntax.yaml",
        &["vars.bad", "hooks.on_first_boot"],
    ),
    (
        "interpolation-total-too-large.yaml",
        // The document-wide limit is reported once, where it is reached.
        &["files[14].inline"],
    ),
    (
        "interpolation-unknown-everywhere.yaml",
        &[
            "template.description",
            "env.A",
            "build.run[1]",
            "apps[0].services[1].env.X",
            "hooks.on_resume",
        ],
    ),
    ("interpolation-unknown-var.yaml", &["files[0].inline"]),
    ("interpolation-value-too-large.yaml", &["vars.a11"]),
    ("json-comment.json", &["(document)"]),
    ("json-syntax-error.json", &["template"]),
    ("json-trailing-text.json", &["(document)"]),
    (
        "json-type-errors.json",
        &[
            "template.version",
            "hardware.cpu",
            "hardware.audio",
            "hardware.disk_gb",
            "hardwares",
        ],
    ),
    (
        "many-problems.yaml",
        &[
            "api_version",
            "name",
            "cpu",
            "hardware.audio",
            "hardware.cpus",
            "env.lower_case",
            "env.TOKEN.secret",
            "files[0].to",
            "files[0].inline",
            "apps[0].services[1].name",
            "apps[0].services[1].restart",
            "apps[0].ports[0].internal",
        ],
    ),
    ("mode-unquoted.yaml", &["files[0].mode"]),
    (
        "ports-duplicate.yaml",
        &["apps[0].ports[2].internal", "apps[1].ports[0].internal"],
    ),
    (
        "ports-range.yaml",
        &[
            "apps[0].ports[0].internal",
            "apps[0].ports[1].internal",
            "apps[0].ports[2].external",
            "apps[0].ports[3].internal",
            "apps[0].ports[4].protocol",
        ],
    ),
    (
        "ports-reserved.yaml",
        &[
            "apps[0].ports[0].internal",
            "apps[0].ports[1].internal",
            "apps[0].ports[2].internal",
            "apps[0].ports[3].internal",
        ],
    ),
    // Reported today with a 4th, spurious `env.KEY.secret`: "secret `API_KEY` is not declared".
    (
        "references-to-invalid-items.yaml",
        &[
            "secrets[0].name",
            "apps[0].services[0].restart",
            "apps[0].ports[0].internal",
        ],
    ),
    (
        "secrets-bad.yaml",
        &[
            "secrets[0].name",
            "secrets[2].name",
            "secrets[3].name",
            "secrets[4].name",
        ],
    ),
    (
        "services-fields.yaml",
        &[
            "apps[0].services[0].run",
            "apps[0].services[1].run",
            "apps[0].services[1].cwd",
            "apps[0].services[1].user",
            "apps[0].services[1].stop_signal",
            "apps[0].services[1].log",
            "apps[0].services[1].env.lower",
            "apps[0].services[1].env.SECRET.secret",
        ],
    ),
    (
        "services-name-rules.yaml",
        &[
            "apps[0].services[0].name",
            "apps[1].name",
            "apps[1].services[0].name",
            "apps[1].services[1].name",
            "apps[2].name",
        ],
    ),
    (
        "services-restart-no-boolean.yaml",
        &["apps[0].services[1].restart"],
    ),
    ("services-restart.yaml", &["apps[0].services[1].restart"]),
    (
        "streaming-bad.yaml",
        &[
            "streaming[0].url",
            "streaming[0].key.secret",
            "streaming[1].url",
            "streaming[1].name",
            "streaming[2].name",
            "streaming[2].url",
            "streaming[3].name",
            "streaming[3].autostart",
        ],
    ),
    (
        "sugar-conflicts-all.yaml",
        &["ram", "display", "wallpaper", "on_first_boot"],
    ),
    ("sugar-cpu-conflict.yaml", &["cpu"]),
    ("sugar-display-bad.yaml", &["display"]),
    (
        "sugar-files-bad.yaml",
        &[
            "files[\"relative/path.txt\"]",
            "files[\"/proc/x\"]",
            "files[\"/opt/x\"]",
            "files[\"/opt//x\"]",
        ],
    ),
    (
        "sugar-files-value-not-string.yaml",
        &["files[\"/opt/a\"]", "files[\"/opt/b\"]"],
    ),
    ("sugar-hardware-values.yaml", &["cpu", "ram", "display"]),
    ("sugar-name-bad.yaml", &["name", "name"]),
    ("sugar-name-conflict.yaml", &["name", "name"]),
    ("sugar-name-number.yaml", &["name"]),
    // Reported today at `template.version` with no location; the author wrote `name`.
    ("sugar-name-without-version.yaml", &["name"]),
    ("sugar-ram-bad.yaml", &["ram"]),
    ("sugar-wallpaper-bad-scheme.yaml", &["wallpaper"]),
    (
        "telemetry-bad.yaml",
        &[
            "telemetry.metrics",
            "telemetry.logs[1]",
            "telemetry.logs[2]",
            "telemetry.otel_endpoint",
        ],
    ),
    ("template-missing.yaml", &["template"]),
    ("template-name-double-hyphen.yaml", &["template.name"]),
    ("template-name-empty.yaml", &["template.name"]),
    ("template-name-leading-hyphen.yaml", &["template.name"]),
    ("template-name-not-kebab.yaml", &["template.name"]),
    ("template-name-too-long.yaml", &["template.name"]),
    (
        "template-name-version-missing.yaml",
        &["template.name", "template.version"],
    ),
    (
        "template-provenance.yaml",
        &[
            "template.publisher",
            "template.license",
            "template.homepage",
            "template.source",
        ],
    ),
    ("template-version-not-semver.yaml", &["template.version"]),
    ("template-version-v-prefix.yaml", &["template.version"]),
    (
        "terminal-bad.yaml",
        &[
            "terminal[1].name",
            "terminal[1].cwd",
            "terminal[2].name",
            "terminal[3].name",
        ],
    ),
    (
        "triggers-actions.yaml",
        &[
            "triggers[0].actions",
            "triggers[1].actions",
            "triggers[2].actions[0]",
            "triggers[2].actions[1]",
            "triggers[2].actions[2].restart_service",
            "triggers[2].actions[3].run",
            "triggers[2].actions[4]",
            "triggers[2].actions[4].shell",
            "triggers[2].dedup",
        ],
    ),
    (
        "triggers-fields-of-other-source.yaml",
        &[
            "triggers[0].source.cron",
            "triggers[0].source.app",
            "triggers[1].source.events",
            "triggers[1].source.path",
        ],
    ),
    (
        "triggers-names.yaml",
        &["triggers[0].name", "triggers[2].name", "triggers[3].name"],
    ),
    (
        "triggers-schedule-cron.yaml",
        &[
            "triggers[0].source.cron",
            "triggers[1].source.cron",
            "triggers[2].source.cron",
            "triggers[3].source.cron",
            "triggers[4].source.cron",
            "triggers[5].source.cron",
        ],
    ),
    (
        "triggers-source-type.yaml",
        &[
            "triggers[0].source",
            "triggers[1].source.type",
            "triggers[2].source.type",
        ],
    ),
    (
        "triggers-webhook-file-health.yaml",
        &[
            "triggers[0].source.path",
            "triggers[1].source.path",
            "triggers[2].source.path",
            "triggers[3].source.path",
            "triggers[4].source.events[1]",
            "triggers[5].source.app",
            "triggers[6].source.app",
        ],
    ),
    (
        "type-errors.yaml",
        &[
            "env",
            "apps",
            "build.apt[1]",
            "build.run",
            "hooks.on_first_boot",
            "vars.port",
        ],
    ),
    (
        "type-errors-no-cascade.yaml",
        &[
            "template",
            "files[0].from",
            "apps[0].health.type",
            "triggers[0].actions",
            "egress_policy.mode",
            "streaming[0].url",
            "desktop.wallpaper",
            "env.A.secret",
        ],
    ),
    (
        "unknown-field-nested.yaml",
        &[
            "hardware.cpus",
            "apps[0].services[0].command",
            "apps[0].ports[0].internal",
            "apps[0].ports[0].port",
        ],
    ),
    ("unknown-field-top-level.yaml", &["hardwares", "zzz"]),
    ("vars-bad-names.yaml", &["vars.1st", "vars[\"has space\"]"]),
    (
        "vars-not-strings.yaml",
        &["vars.port", "vars.list", "vars.empty"],
    ),
    ("version-unquoted-float.yaml", &["template.version"]),
    ("yaml-alias-bomb.yaml", &["(document)"]),
    ("yaml-alias-key.yaml", &["vars"]),
    ("yaml-complex-key.yaml", &["env"]),
    ("yaml-custom-tag.yaml", &["hardware"]),
    ("yaml-empty-document.yaml", &["(document)"]),
    ("yaml-merge-key.yaml", &["apps[1].health"]),
    ("yaml-multiple-documents.yaml", &["(document)"]),
    ("yaml-null-key.yaml", &["env"]),
    ("yaml-recursive-alias.yaml", &["vars.a"]),
    ("yaml-syntax-error.yaml", &["(document)"]),
    ("yaml-tag.yaml", &["template.version"]),
    ("yaml-too-deep.yaml", &["vars[0][0][0]..."]),
];

/// What each JSON fixture tests (JSON has no comments to say it in the file).
const JSON_DESCRIPTIONS: &[(&str, &str)] = &[
    ("duplicate-key-env.json", "Duplicate key in `env` (JSON)."),
    (
        "duplicate-key-struct.json",
        "Duplicate field in a struct mapping (`template.name` twice, JSON).",
    ),
    ("duplicate-key-vars.json", "Duplicate key in `vars` (JSON)."),
    ("json-comment.json", "JSON has no comments."),
    (
        "json-syntax-error.json",
        "A JSON syntax error (trailing commas).",
    ),
    ("json-trailing-text.json", "Text after the JSON document."),
    (
        "json-type-errors.json",
        "Type errors and an unknown field in JSON: all reported together.",
    ),
];

/// What an invalid fixture tests: its first comment line, or its JSON description.
fn description(path: &Path) -> String {
    let name = file_name(path);
    if name.ends_with(".json") {
        return JSON_DESCRIPTIONS
            .iter()
            .find(|(file, _)| *file == name)
            .map(|(_, text)| (*text).to_owned())
            .unwrap_or_else(|| panic!("{name}: add it to JSON_DESCRIPTIONS"));
    }
    let text = read(path);
    let first = text.lines().next().unwrap_or_default();
    first
        .strip_prefix("# ")
        .unwrap_or_else(|| panic!("{name}: must start with a `# what it tests` comment line"))
        .to_owned()
}

#[test]
fn invalid_fixtures_say_what_they_test() {
    for path in fixtures("invalid") {
        assert!(
            !description(&path).trim().is_empty(),
            "{}",
            file_name(&path)
        );
    }
}

#[test]
fn invalid_fixture_table_lists_every_fixture() {
    let files: Vec<String> = fixtures("invalid")
        .iter()
        .map(|p| file_name(p).to_owned())
        .collect();
    for file in &files {
        assert!(
            INVALID.iter().any(|(name, _)| name == file),
            "{file}: add it to INVALID with the paths it must report"
        );
    }
    for (name, _) in INVALID {
        assert!(
            files.iter().any(|f| f == name),
            "{name}: listed in INVALID but there is no such fixture"
        );
    }
}

/// Every invalid fixture fails, reporting all of its problems (the count and
/// each path), not only the first.
#[test]
fn every_invalid_fixture_reports_all_its_problems_at_their_paths() {
    let mut failures = Vec::new();
    for path in fixtures("invalid") {
        let name = file_name(&path);
        let Some((_, expected)) = INVALID.iter().find(|(file, _)| *file == name) else {
            continue; // reported by `invalid_fixture_table_lists_every_fixture`
        };
        let error = match parse(&path) {
            Ok(template) => {
                failures.push(format!("{name}: was accepted ({})", template.digest()));
                continue;
            }
            Err(error) => error,
        };
        let actual: Vec<String> = error
            .diagnostics()
            .iter()
            .map(|d| d.path.to_string())
            .collect();
        let matches = actual.len() == expected.len()
            && actual
                .iter()
                .zip(expected.iter())
                .all(|(a, e)| match e.strip_suffix("...") {
                    Some(prefix) => a.starts_with(prefix),
                    None => a == e,
                });
        if !matches {
            failures.push(format!(
                "{name}: expected {} problem(s) at {expected:?}, got {}:\n{}",
                expected.len(),
                actual.len(),
                render(&error)
            ));
        }
    }
    report("did not report the expected problems", failures);
}

/// The full diagnostic list of every invalid fixture, one snapshot per fixture
/// (`snapshots/fixtures__invalid_fixtures@NAME.snap`), the way `insta::glob!`
/// names them; every fixture is checked even when an earlier one differs.
#[test]
fn invalid_fixtures() {
    let mut failures = Vec::new();
    for path in fixtures("invalid") {
        let name = file_name(&path).to_owned();
        let rendered = match parse(&path) {
            Ok(template) => format!("ACCEPTED: {}", template.digest()),
            Err(error) => render(&error),
        };
        let description = description(&path);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            insta::with_settings!({
                snapshot_suffix => name.as_str(),
                input_file => &path,
                description => description.as_str(),
                omit_expression => true,
            }, {
                insta::assert_snapshot!(rendered);
            });
        }));
        if outcome.is_err() {
            failures.push(name);
        }
    }
    report("differ from their snapshots", failures);
}

/// A few key fixtures, asserted without snapshots: the path, place and gist of
/// the problem, so a regression in paths fails here with a clear message.
#[test]
fn key_fixtures_report_the_exact_field() {
    let cases: &[(&str, &str, (u32, u32), &str)] = &[
        (
            "interpolation-unknown-var.yaml",
            "files[0].inline",
            (8, 13),
            "${var.regoin}",
        ),
        (
            "services-restart.yaml",
            "apps[0].services[1].restart",
            (11, 18),
            "`sometimes`",
        ),
        (
            "hardware-cpu.yaml",
            "hardware.cpu",
            (5, 8),
            "`3` is not allowed",
        ),
        (
            "duplicate-key-env.yaml",
            "env.NODE_ENV",
            (6, 3),
            "duplicate key `NODE_ENV`",
        ),
        (
            "duplicate-key-env.json",
            "env.NODE_ENV",
            (4, 38),
            "duplicate key `NODE_ENV`",
        ),
        (
            "unknown-field-top-level.yaml",
            "hardwares",
            (4, 1),
            "did you mean `hardware`?",
        ),
        (
            "unknown-field-nested.yaml",
            "hardware.cpus",
            (5, 3),
            "did you mean `cpu`?",
        ),
        ("sugar-cpu-conflict.yaml", "cpu", (4, 6), "`hardware.cpu`"),
        (
            "sugar-hardware-values.yaml",
            "cpu",
            (4, 6),
            "`3` is not allowed",
        ),
        (
            "sugar-files-bad.yaml",
            r#"files["/proc/x"]"#,
            (6, 3),
            "reserved",
        ),
        ("audio-yes.yaml", "hardware.audio", (5, 10), "`yes`"),
        (
            "version-unquoted-float.yaml",
            "template.version",
            (5, 12),
            "quote it",
        ),
        ("mode-unquoted.yaml", "files[0].mode", (7, 11), "quote it"),
        (
            "health-on-fail.yaml",
            "apps[0].health.on_fail",
            (8, 51),
            "no service named `b-server`",
        ),
        (
            "ports-reserved.yaml",
            "apps[0].ports[3].internal",
            (10, 21),
            "reserved",
        ),
        ("files-dot-dot.yaml", "files[1].to", (6, 11), "`..`"),
        (
            "files-double-slash-reserved.yaml",
            "files[0].to",
            (5, 11),
            "under `/proc`",
        ),
        (
            "interpolation-self-reference.yaml",
            "vars.a",
            (5, 6),
            "refers to itself",
        ),
        (
            "streaming-bad.yaml",
            "streaming[0].key.secret",
            (9, 20),
            "not declared",
        ),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    for (file, field, (line, column), gist) in cases {
        let error = parse(&dir.join(file)).expect_err(file);
        let found = error
            .diagnostics()
            .iter()
            .find(|d| d.path.to_string() == *field);
        let Some(diagnostic) = found else {
            panic!("{file}: nothing reported at `{field}`:\n{}", render(&error));
        };
        let at = diagnostic.location.expect("a location");
        assert_eq!(
            (at.line, at.column),
            (*line, *column),
            "{file}: {diagnostic}"
        );
        assert!(diagnostic.message.contains(gist), "{file}: {diagnostic}");
    }
}

/// Every diagnostic from text points into the text.
#[test]
fn every_invalid_fixture_diagnostic_has_a_location() {
    let mut failures = Vec::new();
    for path in fixtures("invalid") {
        let Err(error) = parse(&path) else { continue };
        let unplaced: Vec<String> = error
            .diagnostics()
            .iter()
            .filter(|d| d.location.is_none())
            .map(ToString::to_string)
            .collect();
        if !unplaced.is_empty() {
            failures.push(format!("{}:\n{}", file_name(&path), unplaced.join("\n")));
        }
    }
    report("have diagnostics without a location", failures);
}

/// The 4 MiB limit is too large for a fixture file; build the document here.
#[test]
fn oversized_documents_are_rejected_before_parsing() {
    let filler = "x".repeat(4 * 1024 * 1024);
    let yaml = format!("api_version: orgo.ai/v1\nname: big@1.0.0\nfiles:\n  /opt/x: {filler}\n");
    let json = format!(
        r#"{{"api_version":"orgo.ai/v1","name":"big@1.0.0","files":{{"/opt/x":"{filler}"}}}}"#
    );
    for (text, format) in [(yaml, Format::Yaml), (json, Format::Json)] {
        let error = Template::parse(&text, format).expect_err("over 4 MiB");
        assert_eq!(error.diagnostics().len(), 1, "{}", render(&error));
        let diagnostic = &error.diagnostics()[0];
        assert!(diagnostic.path.is_root(), "{diagnostic}");
        assert!(
            diagnostic
                .message
                .contains("over the limit of 4194304 bytes"),
            "{diagnostic}"
        );
    }
}
