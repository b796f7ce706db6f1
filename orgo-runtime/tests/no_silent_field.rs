//! No silent field: every field of the `orgo.ai/v1` schema is either carried
//! out by this runtime, with a named end-to-end test that exercises it, or
//! refused by `Runtime::check` (so `build` and `launch` fail) with its path.
//!
//! The fields come from the committed JSON Schema, walked here, so a field
//! added to the format without a line in [`COVERAGE`] fails this test; a
//! line naming a test that does not exist fails it too. Needs no VM.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

use std::collections::BTreeSet;
use std::path::Path;

use orgo_runtime::{Runtime, RuntimeConfig, RuntimeError};
use orgo_template::Template;
use serde_json::Value;

/// What this runtime does with a field.
enum Coverage {
    /// Carried out; the end-to-end test (`file::function`, the file under
    /// the workspace) that exercises it.
    Tested(&'static str),
    /// Refused on this host: a template document (YAML, besides `api_version`
    /// and `name`) that sets the field, and the path the refusal names.
    Refused(&'static str, &'static str),
    /// Shapes the document, not the computer (identity, descriptions,
    /// interpolation sugar): why.
    Format(&'static str),
}

use Coverage::{Format, Refused, Tested};

const BUILD: &str = "orgo-runtime/tests/runtime_e2e.rs::the_build_runs_the_steps_in_order_streams_their_output_then_hits_the_cache";
const LAUNCH: &str = "orgo-runtime/tests/runtime_e2e.rs::two_launches_at_once_get_their_own_identity_secrets_env_and_files";
const STOP: &str = "orgo-runtime/tests/runtime_e2e.rs::a_detached_computer_is_reached_by_id_and_stopped_with_its_on_shutdown";
const IDENTITY: &str =
    "orgo-runtime/tests/fields_e2e.rs::vars_hardware_and_an_unset_optional_secret";
const AGENT: &str = "orgo-runtime/tests/qemu_e2e.rs::base_image_boots_and_the_agent_does_its_work";
const EGRESS_ALLOW: &str =
    "orgo-runtime/tests/egress_e2e.rs::an_allow_policy_is_enforced_on_the_host_against_every_probe";
const EGRESS_BLOCK: &str = "orgo-runtime/tests/egress_e2e.rs::a_block_policy_denies_only_its_rules_and_learn_mode_records_the_rest";
const PORTS: &str =
    "orgo-runtime/tests/egress_e2e.rs::ports_are_forwarded_from_the_host_and_removed_on_stop";
const EXACT_PORT: &str =
    "orgo-runtime/tests/egress_e2e.rs::an_exact_port_is_that_port_and_a_taken_one_fails_the_launch";
const BANDWIDTH: &str = "orgo-runtime/tests/egress_e2e.rs::bandwidth_is_capped_both_ways";
const DESKTOP: &str = "orgo-runtime/tests/desktop_e2e.rs::the_desktop_shows_its_wallpaper_and_takes_typing_keys_clicks_scroll_and_drag";
const STREAMS: &str = "orgo-runtime/tests/desktop_e2e.rs::streams_reach_an_rtmp_receiver_by_autostart_and_by_hand_and_the_key_is_not_baked";
const DESCRIPTIVE: &str =
    "descriptive: part of the digest and the published document, no behaviour in the computer";

/// Every schema field, in the schema's own order of appearance.
const COVERAGE: &[(&str, Coverage)] = &[
    (
        "api_version",
        Format("the format's version, checked by the parser"),
    ),
    ("template", Format("the template's identity")),
    ("template.name", Tested(IDENTITY)),
    ("template.version", Tested(IDENTITY)),
    ("template.description", Format(DESCRIPTIVE)),
    ("template.publisher", Format(DESCRIPTIVE)),
    ("template.license", Format(DESCRIPTIVE)),
    ("template.homepage", Format(DESCRIPTIVE)),
    ("template.source", Format(DESCRIPTIVE)),
    (
        "name",
        Format("sugar for `template.name` and `template.version`"),
    ),
    ("cpu", Format("sugar for `hardware.cpu`")),
    ("ram", Format("sugar for `hardware.ram_gb`")),
    (
        "display",
        Format("sugar for `hardware.resolution`, tested below"),
    ),
    (
        "wallpaper",
        Format("sugar for `desktop.wallpaper`, tested below"),
    ),
    ("on_first_boot", Format("sugar for `hooks.on_first_boot`")),
    (
        "vars",
        Format("interpolated away by normalization; tested through `env` in fields_e2e"),
    ),
    ("hardware", Format("a group of the fields below")),
    (
        "hardware.os",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::vars_hardware_and_an_unset_optional_secret"
        )),
    ),
    (
        "hardware.cpu",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::vars_hardware_and_an_unset_optional_secret"
        )),
    ),
    (
        "hardware.ram_gb",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::vars_hardware_and_an_unset_optional_secret"
        )),
    ),
    (
        "hardware.disk_gb",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::vars_hardware_and_an_unset_optional_secret"
        )),
    ),
    (
        "hardware.gpu",
        Refused("hardware: { gpu: h100 }", "hardware.gpu"),
    ),
    (
        "hardware.gpu_count",
        Refused("hardware: { gpu: t4, gpu_count: 2 }", "hardware.gpu_count"),
    ),
    ("hardware.resolution", Tested(DESKTOP)),
    ("hardware.auto_stop_minutes", Tested(AUTO_STOP_E2E)),
    (
        "hardware.region",
        Refused("hardware: { region: iad }", "hardware.region"),
    ),
    ("hardware.audio", Tested(DESKTOP)),
    ("hardware.bandwidth_mbps", Tested(BANDWIDTH)),
    ("secrets", Tested(LAUNCH)),
    ("secrets[].name", Tested(LAUNCH)),
    (
        "secrets[].required",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::vars_hardware_and_an_unset_optional_secret"
        )),
    ),
    ("secrets[].description", Format(DESCRIPTIVE)),
    ("env", Tested(LAUNCH)),
    ("env.*.secret", Tested(LAUNCH)),
    ("build", Format("a group of the fields below")),
    ("build.apt", Tested(BUILD)),
    (
        "build.pip",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::build_pip_and_npm_install_their_packages"
        )),
    ),
    (
        "build.npm",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::build_pip_and_npm_install_their_packages"
        )),
    ),
    ("build.run", Tested(BUILD)),
    ("files", Tested(LAUNCH)),
    ("files[].to", Tested(LAUNCH)),
    ("files[].inline", Tested(LAUNCH)),
    ("files[].from", Tested(LAUNCH)),
    ("files[].mode", Tested(LAUNCH)),
    (
        "files[].owner",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::files_get_their_owner_group_and_mode"
        )),
    ),
    (
        "files[].group",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::files_get_their_owner_group_and_mode"
        )),
    ),
    ("files[].when", Tested(LAUNCH)),
    ("apps", Tested(LAUNCH)),
    ("apps[].name", Tested(BUILD)),
    ("apps[].title", Format(DESCRIPTIVE)),
    ("apps[].install", Tested(BUILD)),
    ("apps[].services", Tested(BUILD)),
    ("apps[].services[].name", Tested(BUILD)),
    ("apps[].services[].run", Tested(LAUNCH)),
    (
        "apps[].services[].cwd",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::a_service_runs_as_its_user_in_its_cwd_with_its_env_and_log"
        )),
    ),
    (
        "apps[].services[].user",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::a_service_runs_as_its_user_in_its_cwd_with_its_env_and_log"
        )),
    ),
    (
        "apps[].services[].env",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::a_service_runs_as_its_user_in_its_cwd_with_its_env_and_log"
        )),
    ),
    (
        "apps[].services[].env.*.secret",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::a_service_runs_as_its_user_in_its_cwd_with_its_env_and_log"
        )),
    ),
    (
        "apps[].services[].log",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::a_service_runs_as_its_user_in_its_cwd_with_its_env_and_log"
        )),
    ),
    (
        "apps[].services[].restart",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::a_failing_http_check_restarts_a_service_that_does_not_restart_itself"
        )),
    ),
    ("apps[].services[].stop_signal", Tested(AGENT)),
    ("apps[].health", Tested(LAUNCH)),
    (
        "apps[].health.type",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::tcp_process_and_command_checks_act_only_when_they_fail"
        )),
    ),
    (
        "apps[].health.url",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::a_failing_http_check_restarts_a_service_that_does_not_restart_itself"
        )),
    ),
    (
        "apps[].health.host",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::tcp_process_and_command_checks_act_only_when_they_fail"
        )),
    ),
    (
        "apps[].health.port",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::tcp_process_and_command_checks_act_only_when_they_fail"
        )),
    ),
    (
        "apps[].health.command",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::tcp_process_and_command_checks_act_only_when_they_fail"
        )),
    ),
    (
        "apps[].health.process",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::tcp_process_and_command_checks_act_only_when_they_fail"
        )),
    ),
    (
        "apps[].health.every",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::tcp_process_and_command_checks_act_only_when_they_fail"
        )),
    ),
    (
        "apps[].health.timeout",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::a_failing_http_check_restarts_a_service_that_does_not_restart_itself"
        )),
    ),
    (
        "apps[].health.retries",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::tcp_process_and_command_checks_act_only_when_they_fail"
        )),
    ),
    // `restart_service` and `alert` in fields_e2e and vm_automation;
    // `restart_vm` (carried out by the launching process, see `support.rs`
    // and README's "Inside the computer"; refused by `orgo launch`, which
    // exits: `bins/orgo/tests/cli.rs`) here:
    ("apps[].health.on_fail", Tested(RESTART_VM_E2E)),
    ("apps[].ports", Tested(PORTS)),
    ("apps[].ports[].internal", Tested(PORTS)),
    ("apps[].ports[].external", Tested(EXACT_PORT)),
    ("apps[].ports[].protocol", Tested(PORTS)),
    ("apps[].ports[].public", Tested(PORTS)),
    ("apps[].autostart", Tested(DESKTOP)),
    ("apps[].autostart[].run", Tested(DESKTOP)),
    ("apps[].autostart[].delay", Tested(DESKTOP)),
    ("triggers", Tested(FILE_TRIGGER_E2E)),
    ("triggers[].name", Tested(WEBHOOK_E2E)),
    ("triggers[].source", Tested(SCHEDULE_E2E)),
    ("triggers[].source.type", Tested(SCHEDULE_E2E)),
    ("triggers[].source.cron", Tested(SCHEDULE_E2E)),
    ("triggers[].source.path", Tested(FILE_TRIGGER_E2E)),
    ("triggers[].source.events", Tested(FILE_TRIGGER_E2E)),
    ("triggers[].source.app", Tested(WEBHOOK_E2E)),
    ("triggers[].actions", Tested(WEBHOOK_E2E)),
    ("triggers[].actions[].run", Tested(WEBHOOK_E2E)),
    ("triggers[].actions[].restart_service", Tested(WEBHOOK_E2E)),
    ("triggers[].actions[].alert", Tested(WEBHOOK_E2E)),
    ("triggers[].dedup", Tested(FILE_TRIGGER_E2E)),
    (
        "terminal",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::terminal_sessions_and_on_every_boot"
        )),
    ),
    (
        "terminal[].name",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::terminal_sessions_and_on_every_boot"
        )),
    ),
    (
        "terminal[].title",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::terminal_sessions_and_on_every_boot"
        )),
    ),
    (
        "terminal[].cwd",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::terminal_sessions_and_on_every_boot"
        )),
    ),
    (
        "terminal[].run",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::terminal_sessions_and_on_every_boot"
        )),
    ),
    ("hooks", Format("a group of the fields below")),
    ("hooks.on_first_boot", Tested(BUILD)),
    (
        "hooks.on_every_boot",
        Tested(concat!(
            "orgo-runtime/tests/fields_e2e.rs",
            "::terminal_sessions_and_on_every_boot"
        )),
    ),
    ("hooks.on_pre_snapshot", Tested(BUILD)),
    ("hooks.on_resume", Tested(LAUNCH)),
    ("hooks.on_shutdown", Tested(STOP)),
    ("telemetry", Tested(METRICS_E2E)),
    ("telemetry.metrics", Tested(METRICS_E2E)),
    ("telemetry.logs", Tested(OTLP_E2E)),
    ("telemetry.otel_endpoint", Tested(OTLP_E2E)),
    ("egress_policy", Tested(EGRESS_ALLOW)),
    ("egress_policy.mode", Tested(EGRESS_BLOCK)),
    ("egress_policy.rules", Tested(EGRESS_ALLOW)),
    ("streaming", Tested(STREAMS)),
    ("streaming[].name", Tested(STREAMS)),
    ("streaming[].url", Tested(STREAMS)),
    ("streaming[].key", Tested(STREAMS)),
    ("streaming[].key.secret", Tested(STREAMS)),
    ("streaming[].autostart", Tested(STREAMS)),
    ("desktop", Tested(DESKTOP)),
    ("desktop.wallpaper", Tested(DESKTOP)),
];

const OTLP_E2E: &str =
    "bins/orgo/tests/vm_automation.rs::otlp_reaches_a_test_receiver_with_the_computer_s_attributes";
const RESTART_VM_E2E: &str = "orgo-runtime/tests/restart_vm_e2e.rs::a_failing_health_check_restores_the_computer_again_under_its_id";
const METRICS_E2E: &str = "bins/orgo/tests/vm_automation.rs::metrics_parse_with_a_real_parser_from_orgo_metrics_and_the_endpoint";
const AUTO_STOP_E2E: &str = "bins/orgo/tests/vm_automation.rs::auto_stop_minutes_1_stops_an_idle_computer_and_leaves_a_busy_one_running";
const FILE_TRIGGER_E2E: &str =
    "bins/orgo/tests/vm_automation.rs::a_file_trigger_fires_on_create_and_dedup_drops_a_burst";
const WEBHOOK_E2E: &str = "bins/orgo/tests/vm_automation.rs::a_webhook_with_data_reaches_its_run_action_and_alerts_are_in_orgo_events";
const SCHEDULE_E2E: &str = "bins/orgo/tests/vm_automation.rs::a_schedule_of_every_minute_fires_within_70_s_and_not_for_minutes_on_disk";

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
}

/// Every field path of the committed schema (`apps[].ports[].public`,
/// `env.*.secret`), following `$ref`s, alternatives, items and maps.
fn schema_fields() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(workspace().join("orgo-template/schema/orgo.ai-v1.schema.json"))
            .unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeSet::new();
    walk(&schema, &schema, "", 0, &mut out);
    out
}

fn walk(root: &Value, node: &Value, path: &str, depth: usize, out: &mut BTreeSet<String>) {
    assert!(depth < 32, "the schema nests too deep at `{path}`");
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap();
        walk(root, &root["$defs"][name], path, depth + 1, out);
        return;
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for alternative in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(root, alternative, path, depth + 1, out);
        }
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, sub) in properties {
            let field = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            out.insert(field.clone());
            walk(root, sub, &field, depth + 1, out);
        }
    }
    if let Some(items) = node.get("items").filter(|i| i.is_object()) {
        walk(root, items, &format!("{path}[]"), depth + 1, out);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(root, values, &format!("{path}.*"), depth + 1, out);
    }
}

#[test]
fn every_schema_field_has_exactly_one_line() {
    let fields = schema_fields();
    assert!(
        fields.len() > 100,
        "the walk found the schema's fields: {fields:?}"
    );
    let listed: Vec<&str> = COVERAGE.iter().map(|(f, _)| *f).collect();
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !listed.contains(&f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "fields with no line in COVERAGE (carry them out with a test, or refuse them in `support.rs`): {missing:?}"
    );
    let stale: Vec<&&str> = listed.iter().filter(|f| !fields.contains(**f)).collect();
    assert!(
        stale.is_empty(),
        "lines for fields the schema lacks: {stale:?}"
    );
    let unique: BTreeSet<&&str> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "a field listed twice");
}

#[test]
fn every_format_only_field_says_why() {
    for (field, coverage) in COVERAGE {
        if let Format(why) = coverage {
            assert!(why.len() > 10, "`{field}`: say why it shapes no computer");
        }
    }
}

#[test]
fn every_tested_field_names_a_test_that_exists() {
    for (field, coverage) in COVERAGE {
        let Tested(test) = coverage else { continue };
        let (file, function) = test.split_once("::").unwrap_or((test, ""));
        assert!(
            !function.is_empty(),
            "`{field}`: `{test}` names no function"
        );
        let source = std::fs::read_to_string(workspace().join(file))
            .unwrap_or_else(|e| panic!("`{field}`: cannot read `{file}`: {e}"));
        assert!(
            source.contains(&format!("fn {function}(")),
            "`{field}`: `{file}` has no test `{function}`"
        );
    }
}

#[tokio::test]
async fn every_refused_field_is_named_by_the_check() {
    let home = tempfile::tempdir().unwrap();
    let runtime = Runtime::open(RuntimeConfig::new(home.path()))
        .await
        .unwrap();
    for (field, coverage) in COVERAGE {
        let Refused(document, path) = coverage else {
            continue;
        };
        let yaml = format!("api_version: orgo.ai/v1\nname: refused@1.0.0\n{document}\n");
        let template = Template::from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("`{field}`: the sample does not parse: {e}\n{yaml}"));
        match runtime.check(&template) {
            Err(RuntimeError::Unsupportable(problems)) => assert!(
                problems.iter().any(|p| p.field == *path),
                "`{field}`: the check names {:?}, not `{path}`",
                problems.iter().map(|p| &p.field).collect::<Vec<_>>()
            ),
            other => panic!("`{field}`: expected a refusal naming `{path}`, got {other:?}"),
        }
        // `build` refuses it the same way, before anything is built.
        let built = runtime
            .build(&template, &mut |_| panic!("nothing is built"))
            .await;
        assert!(
            matches!(built, Err(RuntimeError::Unsupportable(_))),
            "`{field}`: build went ahead"
        );
    }
}

#[tokio::test]
async fn a_template_of_carried_out_fields_passes_the_check() {
    let home = tempfile::tempdir().unwrap();
    let runtime = Runtime::open(RuntimeConfig::new(home.path()))
        .await
        .unwrap();
    let examples = workspace().join("examples/hello.yaml");
    let template = Template::from_yaml(&std::fs::read_to_string(examples).unwrap()).unwrap();
    runtime.check(&template).unwrap();
}

#[tokio::test]
async fn the_region_is_enforced_against_the_hosts() {
    let home = tempfile::tempdir().unwrap();
    let template =
        Template::from_yaml("api_version: orgo.ai/v1\nname: r@1.0.0\nhardware: { region: iad }\n")
            .unwrap();
    let us = Template::from_yaml(
        "api_version: orgo.ai/v1\nname: r@1.0.0\nhardware: { region: auto-us }\n",
    )
    .unwrap();
    for (host, template, runs) in [
        (None, &template, false),
        (Some("sjc"), &template, false),
        (Some("iad"), &template, true),
        (Some("lax"), &us, true),
    ] {
        let mut config = RuntimeConfig::new(home.path());
        config.region = host.map(str::to_owned);
        let runtime = Runtime::open(config).await.unwrap();
        let checked = runtime.check(template);
        assert_eq!(checked.is_ok(), runs, "host {host:?}: {checked:?}");
        if let Err(error) = checked {
            assert!(error.to_string().contains("`hardware.region`"), "{error}");
        }
    }
}
