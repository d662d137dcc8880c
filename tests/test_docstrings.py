"""Every public definition has a docstring: what the API reference (docs/api.rst,
docs/simulator.rst) is generated from.

Public: the names telecard exports (`telecard.__all__`), the pytest plugin, the Q.850 name
functions and firmware_sim's test-instrument API; for each class, its public methods and
properties.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Iterator
from types import ModuleType

import firmware_sim
import firmware_sim.control
import firmware_sim.demo_plan
import firmware_sim.faults
import firmware_sim.network
import firmware_sim.plan
import firmware_sim.remote
import telecard
import telecard.aio
import telecard.pytest_plugin
import telecard.q850

MODULES = (
    telecard,
    telecard.aio,
    telecard.pytest_plugin,
    telecard.q850,
    firmware_sim,
    firmware_sim.control,
    firmware_sim.demo_plan,
    firmware_sim.faults,
    firmware_sim.network,
    firmware_sim.plan,
    firmware_sim.remote,
)


def _public_names(module: ModuleType) -> list[str]:
    """`__all__`, or the public classes and functions the module defines itself."""
    names: list[str] | None = getattr(module, "__all__", None)
    if names is not None:
        return names
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and callable(obj)
        and getattr(obj, "__module__", None) == module.__name__
    ]


def _class_doc(cls: type) -> str | None:
    doc = cls.__dict__.get("__doc__")
    # dataclass and NamedTuple make one up from the signature.
    if not doc or doc.startswith(f"{cls.__name__}("):
        return None
    return str(doc)


def _member_docs(cls: type) -> Iterator[tuple[str, str | None]]:
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if isinstance(attr, property) or inspect.isfunction(attr):
            # A method overriding a documented one inherits its docstring, as in autodoc.
            yield name, inspect.getdoc(getattr(cls, name))


def _undocumented() -> list[str]:
    missing: set[str] = set()
    for module in MODULES:
        if not inspect.getdoc(module):
            missing.add(module.__name__)
        for name in _public_names(module):
            obj = getattr(module, name)
            where = f"{module.__name__}.{name}"
            if inspect.isclass(obj):
                where = f"{obj.__module__}.{obj.__qualname__}"
                if _class_doc(obj) is None:
                    missing.add(where)
                if issubclass(obj, enum.Enum):
                    continue  # members are values, documented by their class
                missing.update(f"{where}.{m}" for m, doc in _member_docs(obj) if not doc)
            elif callable(obj) and not inspect.getdoc(inspect.unwrap(obj)):
                # unwrap: a pytest fixture wraps the function that holds the docstring
                missing.add(where)
    return sorted(missing)


def test_every_public_definition_has_a_docstring() -> None:
    missing = _undocumented()
    assert not missing, "undocumented public definitions:\n  " + "\n  ".join(missing)
