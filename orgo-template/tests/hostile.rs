//! Hostile input ends quickly with a clear error or a correct result: alias
//! bombs, deep nesting, huge strings, long and cyclic interpolation chains.

use orgo_template::{Format, Template};

fn first_message(text: &str, format: Format) -> String {
    let err = Template::parse(text, format).expect_err("hostile input must be rejected");
    err.diagnostics()[0].message.clone()
}

#[test]
fn billion_laughs_is_cut_off() {
    let mut doc = String::from(
        "api_version: orgo.ai/v1\nname: x@1.0.0\nvars:\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..12 {
        let p = i - 1;
        let refs = vec![format!("*a{p}"); 10].join(", ");
        doc.push_str(&format!("  a{i}: &a{i} [{refs}]\n"));
    }
    assert!(first_message(&doc, Format::Yaml).contains("more than 200000 values"));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for text in ["[".repeat(100_000), "{\"a\":".repeat(100_000)] {
        assert!(first_message(&text, Format::Yaml).contains("deeper than 64"));
        assert!(first_message(&text, Format::Json).contains("deeper than 64"));
    }
    // Block sequences, 100,000 deep in 200 KB: `- - - ... x`.
    let block = format!("{}x", "- ".repeat(100_000));
    assert!(first_message(&block, Format::Yaml).contains("deeper than 64"));
}

#[test]
fn huge_documents_are_refused_before_parsing() {
    let big = format!(
        "api_version: orgo.ai/v1\nname: x@1.0.0\nfiles:\n  /opt/x: \"{}\"\n",
        "a".repeat(64 << 20)
    );
    assert!(first_message(&big, Format::Yaml).contains("over the limit of 4194304 bytes"));
    let json = format!("{{\"s\": \"{}\"}}", "a".repeat(64 << 20));
    assert!(first_message(&json, Format::Json).contains("over the limit"));
}

#[test]
fn a_large_string_within_the_limit_is_kept_whole() {
    let content = "x".repeat(3 << 20);
    let doc = format!("api_version: orgo.ai/v1\nname: x@1.0.0\nfiles:\n  /opt/x: \"{content}\"\n");
    let template = Template::from_yaml(&doc).unwrap();
    match &template.files()[0].source {
        orgo_template::FileSource::Inline(text) => assert_eq!(text.len(), content.len()),
        other => panic!("unexpected source {other:?}"),
    }
}

#[test]
fn a_long_var_chain_resolves() {
    // v0 -> v1 -> ... -> v19999 = "end", well past any recursion limit.
    let n = 20_000;
    let mut doc =
        String::from("api_version: orgo.ai/v1\nname: x@1.0.0\nenv:\n  OUT: ${var.v0}\nvars:\n");
    for i in 0..n - 1 {
        doc.push_str(&format!("  v{i}: ${{var.v{}}}\n", i + 1));
    }
    doc.push_str(&format!("  v{}: end\n", n - 1));
    let template = Template::from_yaml(&doc).unwrap();
    assert_eq!(
        template.env()["OUT"],
        orgo_template::EnvValue::Literal("end".into())
    );
}

#[test]
fn cycles_are_reported_where_they_are() {
    let doc = "api_version: orgo.ai/v1\nname: x@1.0.0\nvars:\n  a: ${var.a}\n  b: x${var.c}\n  c: ${var.b}\nenv:\n  E: ${env.E}\n";
    let err = Template::from_yaml(doc).unwrap_err();
    let lines: Vec<String> = err
        .diagnostics()
        .iter()
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    assert_eq!(
        lines,
        [
            "vars.a: `${var.a}` refers to itself",
            "vars.c: `${var.b}` is part of a reference cycle through `var.c`",
            "env.E: `${env.E}` refers to itself",
        ]
    );
}

#[test]
fn doubling_chains_hit_the_expansion_limit() {
    // Each var doubles the last: 2^40 bytes if nothing stopped it.
    let mut doc =
        String::from("api_version: orgo.ai/v1\nname: x@1.0.0\nvars:\n  v0: xxxxxxxxxxxxxxxx\n");
    for i in 1..40 {
        doc.push_str(&format!("  v{i}: ${{var.v{p}}}${{var.v{p}}}\n", p = i - 1));
    }
    doc.push_str("env:\n  OUT: ${var.v39}\n");
    let err = Template::from_yaml(&doc).unwrap_err();
    assert!(
        err.diagnostics()
            .iter()
            .any(|d| d.message.contains("references add more than 1048576 bytes")),
        "{err}"
    );
}

#[test]
fn many_keys_with_a_late_duplicate() {
    let mut doc = String::from("api_version: orgo.ai/v1\nname: x@1.0.0\nenv:\n");
    for i in 0..50_000 {
        doc.push_str(&format!("  K{i}: v\n"));
    }
    doc.push_str("  K49999: again\n");
    assert!(first_message(&doc, Format::Yaml).starts_with("duplicate key `K49999`"));
}

#[test]
fn text_without_references_is_not_charged_as_expansion() {
    // 1.4 MB of shell with `$` in it but no `${var.X}`: nothing expands.
    let script = "echo $HOME\n".repeat(130_000);
    let doc = serde_json::json!({
        "api_version": "orgo.ai/v1",
        "name": "x@1.0.0",
        "files": [{ "to": "/opt/run.sh", "inline": script }],
    });
    let template = Template::from_json(&doc.to_string()).unwrap();
    assert_eq!(
        template.files()[0].source,
        orgo_template::FileSource::Inline(script)
    );
}
