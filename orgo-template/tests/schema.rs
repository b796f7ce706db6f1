//! The committed JSON Schema matches the types, and accepts every valid fixture.

use std::path::{Path, PathBuf};

const COMMITTED: &str = "schema/orgo.ai-v1.schema.json";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_schema_matches_the_types() {
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&orgo_template::json_schema()).unwrap()
    );
    let path = manifest_dir().join(COMMITTED);
    if std::env::var_os("ORGO_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == generated,
        "{COMMITTED} is out of date with the types; regenerate it with\n  \
         ORGO_BLESS=1 cargo test -p orgo-template --test schema"
    );
}

fn to_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("fixture is readable");
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).expect("valid fixture is JSON")
    } else {
        serde_yaml::from_str(&text).expect("valid fixture is YAML")
    }
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&orgo_template::json_schema())
        .expect("the schema is a valid JSON Schema")
}

#[test]
fn every_valid_fixture_satisfies_the_schema() {
    let validator = validator();
    let mut checked = 0;
    for entry in std::fs::read_dir(manifest_dir().join("tests/fixtures/valid")).unwrap() {
        let path = entry.unwrap().path();
        let instance = to_json(&path);
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{} breaks the schema:\n{}",
            path.display(),
            errors.join("\n")
        );
        checked += 1;
    }
    assert!(checked > 10, "expected the valid fixtures, found {checked}");
}

#[test]
fn the_schema_rejects_shape_errors() {
    let validator = validator();
    for (yaml, why) in [
        (
            "api_version: orgo.ai/v1\nname: x@1.0.0\nhardwares: {}\n",
            "unknown top-level field",
        ),
        (
            "api_version: orgo.ai/v1\nname: x@1.0.0\nhardware: {cpus: 2}\n",
            "unknown nested field",
        ),
        (
            "api_version: orgo.ai/v1\nname: x@1.0.0\nhardware: {audio: 'yes'}\n",
            "string for a boolean",
        ),
        (
            "api_version: orgo.ai/v1\nname: x@1.0.0\nfiles: [{to: /x, inline: 3}]\n",
            "number for a string",
        ),
        (
            "api_version: orgo.ai/v1\nname: x@1.0.0\nenv: {A: {secrets: x}}\n",
            "misspelt secret reference",
        ),
        ("name: x@1.0.0\n", "missing api_version"),
    ] {
        let instance: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        assert!(
            !validator.is_valid(&instance),
            "the schema should reject: {why}"
        );
    }
}
