"""orgo.Template: every example and fixture of the reference, round trips
through dict, YAML and JSON, and the canonical bytes behind the digest."""

import copy
import hashlib
import json
import pickle
import re

import pytest

import orgo
from conftest import BENCH_DATA, EXAMPLES, FIXTURES, GOLDEN, templates_in

VALID = templates_in(FIXTURES / "valid")
REFERENCE = [
    BENCH_DATA / "reference-canonical.yaml",
    BENCH_DATA / "reference-apps.yaml",
    GOLDEN / "reference-sugar.yaml",
    GOLDEN / "reference-canonical.yaml",
    GOLDEN / "rich.yaml",
]
EVERY_VALID = VALID + templates_in(EXAMPLES) + REFERENCE

# The digest README.md shows for both workstation examples.
WORKSTATION_DIGEST = "sha256:11e9d150aa5e645753981a75b1e410c11e2058688dca986c0a39a18671c29b87"


def ids(paths):
    return [f"{p.parent.name}/{p.name}" for p in paths]


@pytest.mark.parametrize("path", EVERY_VALID, ids=ids(EVERY_VALID))
def test_every_valid_template_loads_and_round_trips(path):
    template = orgo.Template.load(path)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", template.digest)

    text = path.read_text(encoding="utf-8")
    direct = (
        orgo.Template.from_json(text) if path.suffix == ".json" else orgo.Template.from_yaml(text)
    )
    assert direct.digest == template.digest

    canonical = template.normalize()
    assert isinstance(canonical, dict)
    assert canonical["api_version"] == "orgo.ai/v1"
    via_dict = orgo.Template.from_dict(canonical)
    via_yaml = orgo.Template.from_yaml(template.to_yaml())
    via_json = orgo.Template.from_json(template.to_json())
    via_canonical = orgo.Template.from_json(template.to_json(canonical=True))
    via_plain_json = orgo.Template.from_dict(json.loads(json.dumps(canonical)))
    for other in (via_dict, via_yaml, via_json, via_canonical, via_plain_json):
        assert other.digest == template.digest
        assert other == template
        assert other.normalize() == canonical


@pytest.mark.parametrize("path", EVERY_VALID, ids=ids(EVERY_VALID))
def test_the_digest_is_the_sha256_of_the_canonical_json(path):
    template = orgo.Template.load(path)
    canonical = template.to_json(canonical=True)
    assert template.digest == "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert "\n" not in canonical
    # The indented JSON is the same value as the canonical dict.
    assert json.loads(template.to_json()) == template.normalize()


@pytest.mark.parametrize("name", ["rich", "reference-canonical"])
def test_canonical_json_matches_the_rust_golden_files(name):
    template = orgo.Template.load(GOLDEN / f"{name}.yaml")
    golden = (GOLDEN / f"{name}.canonical.json").read_text(encoding="utf-8").strip()
    assert template.to_json(canonical=True) == golden


def test_sugar_and_canonical_share_a_digest():
    canonical = orgo.Template.load(EXAMPLES / "workstation.yaml")
    sugar = orgo.Template.load(EXAMPLES / "workstation-sugar.yaml")
    assert canonical.digest == sugar.digest == WORKSTATION_DIGEST
    assert canonical == sugar
    assert hash(canonical) == hash(sugar)
    assert len({canonical, sugar}) == 1
    reference_sugar = orgo.Template.load(GOLDEN / "reference-sugar.yaml")
    reference_canonical = orgo.Template.load(GOLDEN / "reference-canonical.yaml")
    assert reference_sugar == reference_canonical


def test_the_reference_example_in_every_form():
    yaml_text = """
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
    inline: "hello"
hooks:
  on_first_boot: |
    echo "ready"
"""
    sugar = """
api_version: orgo.ai/v1
name: my-workstation@1.0.0
cpu: 2
ram: 4gb
display: 1280x800
env: { NODE_ENV: production }
files: { /opt/welcome.txt: hello }
on_first_boot: |
  echo "ready"
"""
    as_dict = {
        "api_version": "orgo.ai/v1",
        "name": "my-workstation@1.0.0",
        "hardware": {"cpu": 2, "ram_gb": 4, "resolution": "1280x800x24"},
        "env": {"NODE_ENV": "production"},
        "files": {"/opt/welcome.txt": "hello"},
        "hooks": {"on_first_boot": 'echo "ready"\n'},
    }
    template = orgo.Template.from_yaml(yaml_text)
    assert orgo.Template.from_yaml(sugar) == template
    assert orgo.Template.from_dict(as_dict) == template
    assert orgo.Template.from_json(json.dumps(as_dict)) == template
    assert template.name == "my-workstation"
    assert template.version == "1.0.0"
    canonical = template.normalize()
    assert list(canonical)[:3] == ["api_version", "template", "hardware"]
    assert canonical["hardware"] == {
        "os": "linux",
        "cpu": 2,
        "ram_gb": 4,
        "resolution": "1280x800x24",
        "audio": False,
    }
    assert canonical["files"] == [{"to": "/opt/welcome.txt", "inline": "hello", "when": "build"}]


def test_interpolation_escapes_survive_a_round_trip():
    template = orgo.Template.from_yaml(
        "api_version: orgo.ai/v1\nname: x@1.0.0\n"
        "vars: { who: world }\n"
        'files: { /opt/a: "hello ${var.who}, literally $${var.who}, shell ${HOME}" }\n'
    )
    inline = template.normalize()["files"][0]["inline"]
    assert inline == "hello world, literally $${var.who}, shell ${HOME}"
    assert orgo.Template.from_dict(template.normalize()) == template


def test_load_detects_the_format(tmp_path):
    text = (EXAMPLES / "my-app.yaml").read_text(encoding="utf-8")
    expected = orgo.Template.from_yaml(text)
    as_json = expected.to_json()
    for name, content in [
        ("a.yml", text),
        ("a.json", as_json),
        ("no-extension", as_json),
        ("no-extension-yaml", text),
        ("flow.txt", "{api_version: orgo.ai/v1, name: my-app@1.0.0}"),
    ]:
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        loaded = orgo.Template.load(path)
        assert loaded.digest, name
    assert orgo.Template.load(tmp_path / "a.json") == expected
    assert orgo.Template.load(str(tmp_path / "no-extension")) == expected


def test_format_is_not_guessed_for_from_json():
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.from_json("api_version: orgo.ai/v1\n")
    assert "JSON syntax" in info.value.errors[0].message


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        orgo.Template.load(tmp_path / "nope.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"api_version: orgo.ai/v1\nname: caf\xe9@1.0.0\n")
    with pytest.raises(orgo.OrgoError, match=r"latin1\.yaml: not UTF-8 text") as info:
        orgo.Template.load(latin1)
    assert not isinstance(info.value, orgo.ValidationError)


def test_identity_repr_pickle_and_copy():
    template = orgo.Template.load(EXAMPLES / "my-app.yaml")
    assert repr(template) == (
        f"Template(name='{template.name}', version='{template.version}', "
        f"digest='{template.digest}')"
    )
    assert pickle.loads(pickle.dumps(template)) == template
    assert copy.deepcopy(template) == template
    assert template != template.digest
    assert template.reference("orgo") == f"orgo/{template.name}@{template.version}"
    with pytest.raises(orgo.OrgoError) as info:
        template.reference("Not A Namespace")
    assert not isinstance(info.value, orgo.ValidationError)


def test_templates_are_immutable():
    template = orgo.Template.load(EXAMPLES / "my-app.yaml")
    canonical = template.normalize()
    canonical["template"]["name"] = "changed"
    assert template.name != "changed"
    with pytest.raises(AttributeError):
        template.digest = "sha256:0"


def test_template_schema():
    schema = orgo.template_schema()
    assert schema["$id"] == "https://www.orgo.ai/api/template-schema"
    assert "api_version" in schema["properties"]
    assert schema == orgo.template_schema()
    json.dumps(schema)


def test_from_dict_takes_any_mapping_and_tuples():
    from types import MappingProxyType

    data = MappingProxyType(
        {
            "api_version": "orgo.ai/v1",
            "name": "x@1.0.0",
            "build": MappingProxyType({"apt": ("curl", "jq")}),
        }
    )
    template = orgo.Template.from_dict(data)
    assert template.normalize()["build"] == {"apt": ["curl", "jq"]}


def test_from_dict_takes_only_a_mapping():
    for bad in (None, [], "api_version: orgo.ai/v1", 3):
        with pytest.raises(TypeError):
            orgo.Template.from_dict(bad)
