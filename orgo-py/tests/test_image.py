"""orgo.Image: immutable, mapped onto the template's build, env and files, with
a cache key that is a documented function of its content."""

import hashlib
import json
from pathlib import Path

import pytest

import orgo

# The same image and key as `orgo-template/tests/image.rs`: one implementation.
SAMPLE_KEY = "sha256:2eeb45e62c3a5e71f878ec3498006199c1f8e1d646bc2d1f9af75123abe2d612"


def sample():
    return (
        orgo.Image.base()
        .apt_install(["curl", "jq"])
        .pip_install(["requests", "pandas"])
        .npm_install(["pnpm"])
        .env({"PROJECT_ROOT": "/workspace"})
        .workdir("/workspace")
        .run_commands("make -j")
        .add_file("/opt/hello.txt", "hello")
        .add_local_file("/home/me/app.py", "/opt/app.py")
        .add_local_dir("/home/me/site", "/srv/site/")
    )


def jcs(value):
    """RFC 8785 for the ASCII strings, lists and dicts of these tests."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_every_method_returns_a_new_image_and_leaves_its_receiver_alone():
    base = orgo.Image.base().apt_install(["curl"])
    before = (base.to_dict(), base.cache_key(), base.builder_memory_mb, base.working_dir)
    steps = [
        base.apt_install(["jq"]),
        base.pip_install(["x"]),
        base.npm_install(["y"]),
        base.run_commands("true"),
        base.env({"A": "1"}),
        base.env(B="2"),
        base.workdir("/w"),
        base.add_file("/opt/a", "a"),
        base.add_local_file("/a", "/opt/b"),
        base.add_local_dir("/d", "/opt/d"),
        base.builder_memory(8192),
    ]
    assert (base.to_dict(), base.cache_key(), base.builder_memory_mb, base.working_dir) == before
    for step in steps:
        assert step is not base
        assert step != base
    with pytest.raises(AttributeError):
        base.working_dir = "/x"
    # The dict is a copy: changing it changes nothing.
    base.to_dict()["build"]["apt"].append("evil")
    assert base.to_dict() == before[0]


def test_the_cache_key_is_the_documented_hash():
    image = sample()
    assert image.cache_key() == SAMPLE_KEY
    assert image.cache_key() == sample().cache_key()
    content = image.to_dict()
    assert list(content) == ["build", "env", "files"]
    assert image.cache_key() == "sha256:" + hashlib.sha256(jcs(content).encode()).hexdigest()
    assert orgo.Image.base().to_dict() == {}
    assert orgo.Image.base().cache_key() == "sha256:" + hashlib.sha256(b"{}").hexdigest()


def test_builder_memory_changes_neither_the_key_nor_the_template():
    image = sample()
    big = image.builder_memory(16384)
    assert image.builder_memory_mb == 4096
    assert big.builder_memory_mb == 16384
    assert big != image
    assert big.cache_key() == image.cache_key()
    assert big.to_template("x", "1.0.0").digest == image.to_template("x", "1.0.0").digest
    for bad in (0, -1, 2**32):
        with pytest.raises(orgo.OrgoError, match="builder memory"):
            image.builder_memory(bad)


def test_equal_images_are_equal_and_give_equal_digests():
    a, b = sample(), sample()
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.to_template("x", "1.0.0", cpu=2).digest == b.to_template("x", "1.0.0", cpu=2).digest
    split = (
        orgo.Image.base()
        .apt_install("curl")
        .env(PROJECT_ROOT="/elsewhere")
        .apt_install(["jq"])
        .pip_install(("requests",))
        .pip_install(iter(["pandas"]))
        .npm_install(["pnpm"])
        .env({"PROJECT_ROOT": "/workspace"})
        .workdir("/workspace")
        .run_commands(["make -j"])
        .add_file("/opt/hello.txt", "hello")
        .add_local_file(Path("/home/me/app.py"), "/opt/app.py")
        .add_local_dir("/home/me/site", "/srv/site")
    )
    assert split.cache_key() == SAMPLE_KEY
    assert split.to_template("x", "1.0.0").digest == a.to_template("x", "1.0.0").digest


def test_order_within_a_list_is_meaning_and_across_lists_is_not():
    ab = orgo.Image.base().run_commands("a", "b")
    ba = orgo.Image.base().run_commands("b", "a")
    assert ab.cache_key() != ba.cache_key()
    assert ab.to_template("x", "1.0.0").digest != ba.to_template("x", "1.0.0").digest
    apt_first = orgo.Image.base().apt_install(["curl"]).run_commands("make")
    run_first = orgo.Image.base().run_commands("make").apt_install(["curl"])
    assert apt_first.cache_key() == run_first.cache_key()
    env_ab = orgo.Image.base().env(A="1").env(B="2")
    env_ba = orgo.Image.base().env(B="2").env(A="1")
    assert env_ab.cache_key() == env_ba.cache_key()


def test_to_template_maps_the_steps_like_a_template_written_by_hand():
    by_hand = orgo.Template.from_yaml(
        """
api_version: orgo.ai/v1
name: sample@1.0.0
cpu: 2
ram: 4gb
display: 1280x800
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
"""
    )
    template = sample().to_template("sample", "1.0.0", cpu=2, ram_gb=4, resolution="1280x800x24")
    assert isinstance(template, orgo.Template)
    assert template == by_hand
    assert template.name == "sample" and template.version == "1.0.0"
    # The name and hardware are not in the cache key; they are in the digest.
    other = sample().to_template("other", "2.0.0")
    assert other.digest != template.digest
    assert "hardware" in other.normalize()  # `os` and `audio` defaults only
    assert other.normalize()["hardware"] == {"os": "linux", "audio": False}


def test_workdir_applies_to_later_commands_and_is_quoted():
    image = (
        orgo.Image.base()
        .run_commands("before")
        .workdir("/my dir")
        .run_commands("after", ["x", "y"])
    )
    assert image.working_dir == "/my dir"
    assert orgo.Image.base().working_dir is None
    assert image.to_dict()["build"]["run"] == [
        "before",
        "mkdir -p '/my dir'",
        "cd '/my dir' && after",
        "cd '/my dir' && x",
        "cd '/my dir' && y",
    ]


def test_local_paths_are_absolute_file_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = (
        orgo.Image.base()
        .add_local_file("app.py", "/opt/app.py")
        .add_local_file(Path("sub") / "my file.txt", "/opt/f")
        .add_local_dir(".", "/srv/site")
    )
    files = image.to_dict()["files"]
    assert files[0] == {"to": "/opt/app.py", "from": (tmp_path / "app.py").as_uri()}
    assert files[1]["from"] == (tmp_path / "sub" / "my file.txt").as_uri()
    assert "%20" in files[1]["from"]
    assert files[2]["from"] == tmp_path.as_uri() + "/"
    # Nothing is read: the files need not exist.
    image.to_template("x", "1.0.0")


def test_strings_are_literal():
    image = orgo.Image.base().add_file("/opt/a", "${var.x} ${HOME}").run_commands("echo ${env.PATH}")
    canonical = image.to_template("x", "1.0.0").normalize()
    # Spelled as a document spells a literal `${var.`: `$${var.`.
    assert canonical["files"][0]["inline"] == "$${var.x} ${HOME}"
    assert canonical["build"]["run"] == ["echo $${env.PATH}"]
    assert image.to_dict()["build"]["run"] == ["echo $${env.PATH}"]


def test_invalid_images_report_every_problem_at_its_template_path():
    image = (
        orgo.Image.base()
        .apt_install(["ok", "-bad"])
        .workdir("relative")
        .env(lower="x")
        .add_file("/tmp/x", "reserved")
        .add_file("/opt/a", "one")
        .add_file("/opt/a", "two")
    )
    with pytest.raises(orgo.ValidationError) as info:
        image.to_template("Bad_Name", "1.0", cpu=3, cpus=4)
    errors = info.value.errors
    assert [d.path for d in errors] == [
        ["build", "apt", 1],
        ["build", "run", 0],
        ["env", "lower"],
        ["files", 0, "to"],
        ["files", 2, "to"],
        ["hardware", "cpu"],
        ["hardware", "cpus"],
        ["template", "name"],
        ["template", "version"],
    ]
    assert all(d.line is None and d.column is None for d in errors)
    assert errors[1].message == "workdir `relative` must be an absolute path"
    assert "did you mean `cpu`" in errors[6].message


def test_hardware_values_must_have_a_json_form():
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Image.base().to_template("x", "1.0.0", cpu={2})
    (problem,) = info.value.errors
    assert problem.path == ["hardware", "cpu"]


def test_arguments_of_the_wrong_type():
    with pytest.raises(TypeError):
        orgo.Image.base().apt_install(3)
    with pytest.raises(TypeError):
        orgo.Image.base().apt_install(["curl", 3])
    with pytest.raises(TypeError):
        orgo.Image.base().env({"PORT": 8000})
    with pytest.raises(TypeError):
        orgo.Image.base().env(["A", "1"])
    with pytest.raises(TypeError):
        orgo.Image.base().add_file("/opt/a", b"bytes")


def test_repr():
    assert repr(orgo.Image.base()) == "Image()"
    image = orgo.Image.base().apt_install("curl").workdir("/w").builder_memory(8192)
    assert repr(image) == (
        "Image(build={'apt': ['curl'], 'run': ['mkdir -p /w']}, "
        "working_dir='/w', builder_memory_mb=8192)"
    )
