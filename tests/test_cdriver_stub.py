"""The committed typed stub of telecard._cdriver matches the driver's headers and the built
extension (a header change without `python cdriver/build_cdriver.py` fails here)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

from telecard._cdriver import ffi, lib
from tests.conftest import ROOT

STUB = ROOT / "pyapi" / "telecard" / "_cdriver.pyi"


def build_script() -> ModuleType:
    """cdriver/build_cdriver.py as a module (cdriver/ is not a package)."""
    path = ROOT / "cdriver" / "build_cdriver.py"
    spec = importlib.util.spec_from_file_location("build_cdriver", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stub_members(path: Path) -> tuple[set[str], set[str]]:
    """The constants (annotated names) and functions the stub's `_Lib` class declares."""
    (lib_class,) = [
        node for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.ClassDef) and node.name == "_Lib"
    ]
    constants = {
        node.target.id for node in lib_class.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    functions = {node.name for node in lib_class.body if isinstance(node, ast.FunctionDef)}
    return constants, functions


def test_committed_stub_is_generated_from_the_headers() -> None:
    assert STUB.read_text() == build_script().stub(), (
        "pyapi/telecard/_cdriver.pyi is stale: run python cdriver/build_cdriver.py"
    )


def test_stub_declares_what_the_extension_has() -> None:
    constants, functions = stub_members(STUB)
    assert constants and all(name.startswith("TC_") for name in constants)
    assert functions and all(name.startswith("tc_") for name in functions)
    for name in constants:
        value = getattr(lib, name)
        assert type(value) is int, f"lib.{name} is {value!r}"
    for name in functions:
        assert callable(getattr(lib, name)), name
    # Nothing the extension exports is missing from the stub either.
    assert set(dir(lib)) == constants | functions


def test_stub_functions_match_the_c_prototypes() -> None:
    """One stub parameter per C parameter, typed int exactly where C takes an integer."""
    tree = ast.parse(STUB.read_text())
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    assert functions
    for node in functions:
        c_args = ffi.typeof(getattr(lib, node.name)).args
        stub_args = node.args.args[1:]  # after self
        assert len(stub_args) == len(c_args), node.name
        for arg, c_type in zip(stub_args, c_args, strict=True):
            is_int = isinstance(arg.annotation, ast.Name) and arg.annotation.id == "int"
            assert is_int == (c_type.kind == "primitive"), (node.name, arg.arg, c_type)
