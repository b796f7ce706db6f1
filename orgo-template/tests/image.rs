//! The image builder: immutable, mapped onto a template's sections, with a
//! cache key that is a documented function of the image's content.

use orgo_template::{Digest, FileSource, Image, Template, TemplateError};
use serde_json::{Value, json};

fn sample() -> Image {
    Image::base()
        .apt_install(["curl", "jq"])
        .pip_install(["requests", "pandas"])
        .npm_install(["pnpm"])
        .env([("PROJECT_ROOT", "/workspace")])
        .workdir("/workspace")
        .run_commands(["make -j"])
        .add_file("/opt/hello.txt", "hello")
        .add_local_file("/home/me/app.py", "/opt/app.py")
        .add_local_dir("/home/me/site", "/srv/site/")
}

fn template(image: &Image) -> Template {
    image
        .to_template("sample", "1.0.0", &json!({"cpu": 2, "ram_gb": 4}))
        .expect("a valid image")
}

/// `path: message` for each problem, in the error's order.
fn problems(error: &TemplateError) -> Vec<String> {
    error
        .diagnostics()
        .iter()
        .map(|d| {
            assert_eq!(d.location, None, "an image has no source text: {d}");
            format!("{}: {}", d.path, d.message)
        })
        .collect()
}

#[test]
fn every_method_returns_a_new_image_and_leaves_its_receiver_alone() {
    let base = Image::base();
    let with_curl = base.apt_install(["curl"]);
    let copy = with_curl.clone();
    let steps = [
        with_curl.apt_install(["jq"]),
        with_curl.pip_install(["x"]),
        with_curl.npm_install(["y"]),
        with_curl.run_commands(["true"]),
        with_curl.env([("A", "1")]),
        with_curl.workdir("/w"),
        with_curl.add_file("/opt/a", "a"),
        with_curl.add_local_file("/a", "/opt/b"),
        with_curl.add_local_dir("/d", "/opt/d"),
        with_curl.builder_memory(8192),
    ];
    assert_eq!(with_curl, copy);
    assert_eq!(base, Image::base());
    for (i, step) in steps.iter().enumerate() {
        assert_ne!(*step, with_curl, "step {i} changed nothing");
    }
}

#[test]
fn the_image_writes_build_env_and_files() {
    let template = template(&sample());
    assert_eq!(template.build().apt, ["curl", "jq"]);
    assert_eq!(template.build().pip, ["requests", "pandas"]);
    assert_eq!(template.build().npm, ["pnpm"]);
    assert_eq!(
        template.build().run,
        ["mkdir -p /workspace", "cd /workspace && make -j"]
    );
    assert_eq!(template.env().len(), 1);
    let files: Vec<(String, String)> = template
        .files()
        .iter()
        .map(|f| {
            let source = match &f.source {
                FileSource::Inline(text) => format!("inline {text}"),
                FileSource::From(url) => format!("from {url}"),
                other => format!("{other:?}"),
            };
            (f.to.clone(), source)
        })
        .collect();
    assert_eq!(
        files,
        [
            ("/opt/hello.txt".to_owned(), "inline hello".to_owned()),
            (
                "/opt/app.py".to_owned(),
                "from file:///home/me/app.py".to_owned()
            ),
            (
                "/srv/site".to_owned(),
                "from file:///home/me/site/".to_owned()
            ),
        ]
    );
    assert_eq!(template.template().name.as_str(), "sample");
    assert_eq!(template.hardware().cpu, Some(2));
}

#[test]
fn the_template_is_the_one_written_by_hand() {
    let by_hand = Template::from_yaml(
        r#"
api_version: orgo.ai/v1
name: sample@1.0.0
cpu: 2
ram: 4gb
env: { PROJECT_ROOT: /workspace }
build:
  apt: [curl, jq]
  pip: [requests, pandas]
  npm: [pnpm]
  run: [mkdir -p /workspace, cd /workspace && make -j]
files:
  - { to: /opt/hello.txt, inline: hello }
  - { to: /opt/app.py, from: "file:///home/me/app.py" }
  - { to: /srv/site, from: "file:///home/me/site/" }
"#,
    )
    .expect("valid");
    assert_eq!(template(&sample()).digest(), by_hand.digest());
}

#[test]
fn the_cache_key_hashes_the_documented_canonical_json() {
    let image = sample();
    let expected = concat!(
        r#"{"build":{"apt":["curl","jq"],"npm":["pnpm"],"pip":["requests","pandas"],"#,
        r#""run":["mkdir -p /workspace","cd /workspace && make -j"]},"#,
        r#""env":{"PROJECT_ROOT":"/workspace"},"#,
        r#""files":[{"inline":"hello","to":"/opt/hello.txt"},"#,
        r#"{"from":"file:///home/me/app.py","to":"/opt/app.py"},"#,
        r#"{"from":"file:///home/me/site/","to":"/srv/site"}]}"#
    );
    assert_eq!(image.canonical_json(), expected);
    assert_eq!(image.cache_key(), Digest::of(expected.as_bytes()));
    // Pinned: a change here breaks every cache built on the key.
    assert_eq!(
        image.cache_key().to_string(),
        "sha256:2eeb45e62c3a5e71f878ec3498006199c1f8e1d646bc2d1f9af75123abe2d612"
    );
    assert_eq!(
        image.cache_key(),
        sample().cache_key(),
        "stable across builds"
    );
    // The content as a value: the same object, fields in the reference's order.
    let value = image.to_value();
    let keys: Vec<&String> = value.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["build", "env", "files"]);
}

#[test]
fn builder_memory_is_not_in_the_cache_key_nor_the_template() {
    let image = sample();
    let big = image.builder_memory(16384);
    assert_eq!(image.builder_memory_mb(), 4096);
    assert_eq!(big.builder_memory_mb(), 16384);
    assert_ne!(image, big);
    assert_eq!(image.cache_key(), big.cache_key());
    assert_eq!(template(&image).digest(), template(&big).digest());
}

#[test]
fn equal_images_share_a_key_and_a_digest_however_the_steps_were_split() {
    let one = Image::base()
        .apt_install(["a", "b"])
        .env([("X", "1"), ("Y", "2")]);
    let split = Image::base()
        .env([("Y", "2")])
        .apt_install(["a"])
        .env([("X", "0")])
        .apt_install(["b"])
        .env([("X", "1")]);
    assert_eq!(one.cache_key(), split.cache_key());
    assert_eq!(template(&one).digest(), template(&split).digest());
}

#[test]
fn order_within_a_list_is_meaning() {
    let ab = Image::base().run_commands(["a", "b"]);
    let ba = Image::base().run_commands(["b", "a"]);
    assert_ne!(ab.cache_key(), ba.cache_key());
    assert_ne!(template(&ab).digest(), template(&ba).digest());
    let files_ab = Image::base().add_file("/a", "1").add_file("/b", "2");
    let files_ba = Image::base().add_file("/b", "2").add_file("/a", "1");
    assert_ne!(files_ab.cache_key(), files_ba.cache_key());
}

#[test]
fn name_version_and_hardware_are_not_in_the_cache_key_but_are_in_the_digest() {
    let image = sample();
    let a = image
        .to_template("one", "1.0.0", &Value::Null)
        .expect("valid");
    let b = image
        .to_template("two", "2.0.0", &json!({"cpu": 8}))
        .expect("valid");
    assert_ne!(a.digest(), b.digest());
    assert_eq!(a.hardware().cpu, None);
}

#[test]
fn workdir_applies_to_later_commands_only_and_quotes_for_the_shell() {
    let image = Image::base()
        .run_commands(["before"])
        .workdir("/my dir")
        .run_commands(["after"])
        .workdir("/b")
        .run_commands(["last"]);
    assert_eq!(image.working_dir(), Some("/b"));
    assert_eq!(
        template(&image).build().run,
        [
            "before",
            "mkdir -p '/my dir'",
            "cd '/my dir' && after",
            "mkdir -p /b",
            "cd /b && last"
        ]
    );
}

#[test]
fn strings_are_literal() {
    let image = Image::base()
        .add_file("/opt/a", "${var.x} $${y} ${HOME}")
        .run_commands(["echo ${env.PATH}"]);
    let template = template(&image);
    match &template.files()[0].source {
        FileSource::Inline(text) => assert_eq!(text, "${var.x} $${y} ${HOME}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(template.build().run, ["echo ${env.PATH}"]);
}

#[test]
fn local_paths_become_file_urls() {
    let image = Image::base()
        .add_local_file("/home/me/my file.txt", "/opt/f")
        .add_local_dir("/home/me/dir", "/opt/d");
    let value = image.to_value();
    assert_eq!(
        value["files"],
        json!([
            {"to": "/opt/f", "from": "file:///home/me/my%20file.txt"},
            {"to": "/opt/d", "from": "file:///home/me/dir/"},
        ])
    );
}

#[test]
fn problems_come_back_at_their_paths_in_the_template() {
    let image = Image::base()
        .apt_install(["ok", "-bad"])
        .workdir("relative")
        .env([("lower", "x")])
        .add_file("/tmp/x", "reserved")
        .add_local_file("app.py", "/opt/app.py")
        .add_file("/opt/app.py", "twice");
    let error = image
        .to_template("Bad_Name", "1.0", &json!({"cpu": 3, "cpus": 4}))
        .expect_err("invalid");
    let problems = problems(&error);
    let paths: Vec<&str> = problems
        .iter()
        .map(|p| p.split(": ").next().expect("a path"))
        .collect();
    assert_eq!(
        paths,
        [
            "build.apt[1]",
            "build.run[0]",
            "env.lower",
            "files[0].to",
            "files[1].from",
            "files[2].to",
            "hardware.cpu",
            "hardware.cpus",
            "template.name",
            "template.version",
        ],
        "{problems:#?}"
    );
    assert!(problems[1].contains("workdir `relative` must be an absolute path"));
    assert!(problems[4].contains("`app.py` is a relative path"));
}

#[test]
fn hardware_must_be_an_object() {
    let error = Image::base()
        .to_template("x", "1.0.0", &json!([1]))
        .expect_err("invalid");
    assert_eq!(problems(&error).len(), 1);
    assert!(problems(&error)[0].starts_with("hardware: "));
}

#[test]
fn from_value_reads_like_text() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/workstation.yaml"
    ))
    .expect("the example");
    let template = Template::from_yaml(&text).expect("valid");
    let value: Value = serde_json::from_str(&template.to_json_pretty()).expect("JSON");
    assert_eq!(
        Template::from_value(&value).expect("valid").digest(),
        template.digest()
    );
}

#[test]
fn from_value_reports_in_document_order_without_locations() {
    let error = Template::from_value(&json!({
        "api_version": "orgo.ai/v1",
        "template": {"name": "x", "version": "1.0.0"},
        "hardware": {"ram_gb": 3, "cpu": 3},
        "env": {"lower": "x"},
    }))
    .expect_err("invalid");
    assert_eq!(
        problems(&error)
            .iter()
            .map(|p| p.split(':').next().expect("path"))
            .collect::<Vec<_>>(),
        ["hardware.ram_gb", "hardware.cpu", "env.lower"]
    );
}

#[test]
fn from_value_keeps_the_limits_of_text() {
    let mut deep = json!("leaf");
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let error = Template::from_value(&json!({"api_version": "orgo.ai/v1", "vars": {"a": deep}}))
        .expect_err("too deep");
    assert!(problems(&error)[0].contains("nests deeper than 64 levels"));

    let big = "x".repeat(orgo_template::MAX_DOCUMENT_BYTES + 1);
    let error = Template::from_value(&json!({"api_version": "orgo.ai/v1", "vars": {"a": big}}))
        .expect_err("too large");
    assert!(problems(&error)[0].starts_with("vars.a: document holds more than"));
}
