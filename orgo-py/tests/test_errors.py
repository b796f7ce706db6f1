"""orgo.ValidationError and its diagnostics: every problem, at its path, line
and column, the same as the Rust crate reports (its snapshots are the oracle)."""

import re

import pytest

import orgo
from conftest import FIXTURES, SNAPSHOTS, templates_in

INVALID = templates_in(FIXTURES / "invalid")


def snapshot_lines(path):
    """The diagnostics a Rust snapshot records for an invalid fixture."""
    snapshot = SNAPSHOTS / f"fixtures__invalid_fixtures@{path.name}.snap"
    text = snapshot.read_text(encoding="utf-8")
    body = text.split("\n---\n", 1)[1]
    return body.strip("\n").split("\n")


def render(diagnostic):
    """One diagnostic as the Rust snapshots write it."""
    if diagnostic.line is None:
        return f"{diagnostic.path_str} (no location): {diagnostic.message}"
    return f"{diagnostic.path_str} ({diagnostic.line}:{diagnostic.column}): {diagnostic.message}"


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_every_invalid_fixture_reports_what_rust_reports(path):
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.load(path)
    error = info.value
    assert [render(d) for d in error.errors] == snapshot_lines(path)
    assert str(error).startswith(f"{path}: invalid template: ")
    for diagnostic in error.errors:
        assert isinstance(diagnostic.path, list)
        assert all(isinstance(s, (str, int)) for s in diagnostic.path)
        assert isinstance(diagnostic.line, int) and diagnostic.line >= 1
        assert isinstance(diagnostic.column, int) and diagnostic.column >= 1


def test_the_hierarchy():
    assert issubclass(orgo.OrgoError, ValueError)
    assert issubclass(orgo.ValidationError, orgo.OrgoError)
    with pytest.raises(ValueError):
        orgo.Template.from_yaml("api_version: orgo.ai/v2\n")


def test_every_problem_with_its_path_line_and_column():
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.load(FIXTURES / "invalid" / "many-problems.yaml")
    errors = info.value.errors
    assert len(errors) == 12
    restart = next(d for d in errors if d.path_str == "apps[0].services[1].restart")
    assert restart.path == ["apps", 0, "services", 1, "restart"]
    assert (restart.line, restart.column) == (19, 45)
    assert restart.message == "`sometimes` is not allowed; expected one of `always`, `on-failure`, `no`"
    assert str(restart) == f"apps[0].services[1].restart (19:45): {restart.message}"
    assert repr(restart) == (
        "Diagnostic(path=['apps', 0, 'services', 1, 'restart'], "
        f"message={restart.message!r}, line=19, column=45)"
    )
    lines = [d.line for d in errors]
    assert lines == sorted(lines), "document order"
    message = str(info.value)
    assert "invalid template: 12 problems" in message
    assert message.count("\n") == 12


def test_a_single_problem():
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.from_yaml("api_version: orgo.ai/v1\nname: x@1.0.0\ncpu: 3\n")
    (cpu,) = info.value.errors
    assert cpu.path == ["cpu"]
    assert cpu.path_str == "cpu"
    assert (cpu.line, cpu.column) == (3, 6)
    assert str(info.value) == "invalid template: cpu (3:6): `3` is not allowed; expected one of `1`, `2`, `4`, `8`, `16`"


def test_paths_with_odd_keys_and_the_document_itself():
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.from_yaml(
            'api_version: orgo.ai/v1\nname: x@1.0.0\nfiles: { "/tmp/x y": hi }\n'
        )
    (problem,) = info.value.errors
    assert problem.path == ["files", "/tmp/x y"]
    assert problem.path_str == 'files["/tmp/x y"]'

    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.from_yaml("")
    (problem,) = info.value.errors
    assert problem.path == []
    assert problem.path_str == "(document)"


def test_json_errors_have_lines_and_columns():
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.from_json('{\n  "api_version": "orgo.ai/v1",\n  "name": "x@1.0.0",\n  "cpu": "2"\n}')
    (cpu,) = info.value.errors
    assert (cpu.path, cpu.line, cpu.column) == (["cpu"], 4, 10)


def test_dict_errors_have_paths_in_document_order_but_no_location():
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.from_dict(
            {
                "api_version": "orgo.ai/v1",
                "template": {"name": "x", "version": "1.0.0"},
                "hardware": {"ram_gb": 3, "cpu": 3},
                "apps": [{"name": "a", "services": [{"name": "s", "run": "x", "restart": "sometimes"}]}],
            }
        )
    errors = info.value.errors
    assert [d.path for d in errors] == [
        ["hardware", "ram_gb"],
        ["hardware", "cpu"],
        ["apps", 0, "services", 0, "restart"],
    ]
    assert all(d.line is None and d.column is None for d in errors)
    assert "(no location)" not in str(info.value)
    assert str(errors[0]).startswith("hardware.ram_gb: ")


def test_python_values_without_a_json_form_are_reported_at_their_paths():
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.from_dict(
            {
                "api_version": "orgo.ai/v1",
                "name": "x@1.0.0",
                "hardware": {"disk_gb": 10**30, "bandwidth_mbps": -(10**30), "cpu": float("nan")},
                "vars": {"a": {1, 2}, 3: "x"},
            }
        )
    problems = {d.path_str: d.message for d in info.value.errors}
    assert problems == {
        "hardware.disk_gb": f"the number `{10**30}` is too large (at most 18446744073709551615)",
        "hardware.bandwidth_mbps": f"the number `{-(10**30)}` is too small (at least -9223372036854775808)",
        "hardware.cpu": "the number `NaN` has no JSON form",
        "vars.a": "expected a string, number, boolean, None, list or dict, found a `set`",
        "vars.3": "keys must be strings, found the `int` 3",
    }


def test_python_types_meet_the_format_rules():
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.from_dict(
            {"api_version": "orgo.ai/v1", "name": "x@1.0.0", "hardware": {"cpu": 2.0, "audio": 1, "ram_gb": True}}
        )
    problems = {d.path_str: d.message for d in info.value.errors}
    assert problems["hardware.cpu"] == "expected a whole number, found `2.0`"
    assert set(problems) == {"hardware.cpu", "hardware.audio", "hardware.ram_gb"}


def test_deep_and_cyclic_dicts_stop_at_the_depth_limit():
    cyclic = {"api_version": "orgo.ai/v1"}
    cyclic["vars"] = {"loop": cyclic}
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.from_dict(cyclic)
    assert any("nests deeper than 64 levels" in d.message for d in info.value.errors)


def test_messages_name_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("api_version: orgo.ai/v1\nname: x@1.0.0\ncpu: 3\nhardwares: {}\n", encoding="utf-8")
    with pytest.raises(orgo.ValidationError) as info:
        orgo.Template.load(path)
    assert re.match(rf"{re.escape(str(path))}: invalid template: 2 problems\n", str(info.value))
    assert [d.path_str for d in info.value.errors] == ["cpu", "hardwares"]


def test_diagnostics_compare_by_value():
    def errors():
        with pytest.raises(orgo.ValidationError) as info:
            orgo.Template.from_yaml("api_version: orgo.ai/v1\nname: x@1.0.0\ncpu: 3\n")
        return info.value.errors

    assert errors() == errors()


def test_a_template_this_host_cannot_run_raises_unsupported_error(tmp_path, monkeypatch):
    # The user-mode network (as on a host without root), which cannot
    # enforce `egress_policy`, whoever runs the test.
    monkeypatch.setenv("ORGO_USER_NET", "1")
    template = orgo.Template.from_yaml(
        "api_version: orgo.ai/v1\nname: gpu@1.0.0\n"
        "hardware: { gpu: h100 }\n"
        "egress_policy: { mode: allow, rules: [api.github.com] }\n"
    )
    with pytest.raises(orgo.UnsupportedError) as info:
        orgo.build(template, home=tmp_path)
    error = info.value
    assert isinstance(error, orgo.OrgoError)
    assert set(error.fields) == {"hardware.gpu", "egress_policy"}
    assert "no GPU to pass through" in error.fields["hardware.gpu"]
    assert "user-mode network" in error.fields["egress_policy"]
    assert "`hardware.gpu`" in str(error) and "`egress_policy`" in str(error)
    # Nothing was built or started: the home holds no computer.
    assert not (tmp_path / "computers").exists()


@pytest.mark.parametrize("variable", ["ORGO_STORE_URL", "ORGO_REGISTRY_URL"])
def test_a_fleet_store_is_refused_not_ignored(tmp_path, monkeypatch, variable):
    # The Python package opens no fleet's shared store (the CLI and
    # `orgo serve` do): with one configured it refuses, rather than build
    # and launch on this host's store alone.
    monkeypatch.setenv(variable, "s3://bucket/prefix")
    template = orgo.Template.from_yaml("api_version: orgo.ai/v1\nname: fleet@1.0.0\n")
    with pytest.raises(orgo.OrgoError) as info:
        orgo.build(template, home=tmp_path)
    assert variable in str(info.value)
    assert "s3://bucket" not in str(info.value), "the value is not echoed"
    assert not (tmp_path / "computers").exists()
