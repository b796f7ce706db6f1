//! Golden vectors: the canonical JSON and digest of fixed documents. These pin
//! the canonicalization contract; a change here is a format change.
//!
//! Each `*.canonical.json` holds the exact bytes that are hashed (no trailing
//! newline); the digests below were checked with `sha256sum` on those files.

use orgo_template::Template;

fn golden(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/golden/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("golden file is readable")
}

#[test]
fn reference_example_canonical_and_sugar() {
    let expected = golden("reference-canonical.canonical.json");
    for file in ["reference-canonical.yaml", "reference-sugar.yaml"] {
        let template = Template::from_yaml(&golden(file)).unwrap();
        assert_eq!(template.canonical_json(), expected, "{file}");
        assert_eq!(
            template.digest().to_string(),
            "sha256:11e9d150aa5e645753981a75b1e410c11e2058688dca986c0a39a18671c29b87",
            "{file}"
        );
    }
}

#[test]
fn rich_document_with_defaults_escapes_and_normal_forms() {
    let template = Template::from_yaml(&golden("rich.yaml")).unwrap();
    assert_eq!(template.canonical_json(), golden("rich.canonical.json"));
    assert_eq!(
        template.digest().to_string(),
        "sha256:2618cf787b3f2c3ad43bb4093d5ae15d712a5845b1168a8bcae8c39bdcfbd3ff"
    );
}

#[test]
fn canonical_json_parses_back_to_the_same_bytes() {
    for file in ["reference-sugar.yaml", "rich.yaml"] {
        let template = Template::from_yaml(&golden(file)).unwrap();
        let again = Template::from_json(&template.canonical_json()).unwrap();
        assert_eq!(again.canonical_json(), template.canonical_json(), "{file}");
        let from_yaml = Template::from_yaml(&template.to_yaml()).unwrap();
        assert_eq!(from_yaml.digest(), template.digest(), "{file}");
    }
}
