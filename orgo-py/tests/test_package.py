"""The installed package: stubs and py.typed ship, the stubs and the module
agree, and every public name has a docstring."""

import ast
import inspect
from pathlib import Path

import orgo

PACKAGE = Path(orgo.__file__).parent
STUB = PACKAGE / "__init__.pyi"


INSTANCE_ATTRIBUTES = {
    orgo.ValidationError: {"errors"},
    orgo.BuildError: {"field", "reason", "output"},
    orgo.SecretError: {"missing"},
    orgo.UnsupportedError: {"fields"},
    orgo.PortError: {"field", "reason"},
    orgo.ApiError: {"code", "status", "details"},
}


def stub_names():
    """Public classes and functions of the stub, with their public members
    (a `_Name` class is a typing helper of the stub alone, such as the
    `TypedDict` of a returned dict, not an attribute of the module)."""
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("_"):
            continue
        if isinstance(node, ast.ClassDef):
            members = {
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
            }
            members |= {
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
            names[node.name] = members
        elif isinstance(node, ast.FunctionDef):
            names[node.name] = set()
    return names


def test_stubs_and_py_typed_ship():
    assert STUB.is_file()
    assert (PACKAGE / "py.typed").is_file()


def test_the_stub_and_the_module_agree():
    names = stub_names()
    public = {n for n in orgo.__all__ if not n.startswith("_")}
    assert set(names) == public
    for name, members in names.items():
        runtime = getattr(orgo, name)
        if not inspect.isclass(runtime):
            continue
        actual = {m for m in dir(runtime) if not m.startswith("_")}
        if issubclass(runtime, BaseException):
            actual -= set(dir(BaseException))
            # Set on each instance that orgo raises.
            actual |= INSTANCE_ATTRIBUTES.get(runtime, set())
        assert members == actual, name


def test_every_public_name_has_a_docstring():
    assert orgo.__doc__
    for name in orgo.__all__:
        if name.startswith("_"):
            continue
        value = getattr(orgo, name)
        assert (value.__doc__ or "").strip(), name
        if inspect.isclass(value) and not issubclass(value, BaseException):
            for member in dir(value):
                if member.startswith("_"):
                    continue
                assert (getattr(value, member).__doc__ or "").strip(), f"{name}.{member}"


def test_classes_live_in_the_orgo_module():
    for name in orgo.__all__:
        if inspect.isclass(getattr(orgo, name)):
            assert getattr(orgo, name).__module__ == "orgo", name
    assert orgo.__version__
