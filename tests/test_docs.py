"""Every public name of mmipc has a docstring with an example (help() is the first manual)."""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterator

import mmipc

_METHODS = (types.FunctionType, classmethod, staticmethod, property)


def public_callables() -> Iterator[tuple[str, object]]:
    for name in mmipc.__all__:
        obj = getattr(mmipc, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants: documented where they are defined
        yield name, obj
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, value in vars(obj).items():
                if attr.startswith("_") or not isinstance(value, _METHODS):
                    continue  # fields are described in their class's docstring
                yield f"{name}.{attr}", value


def has_example(doc: str) -> bool:
    return "Example" in doc or ">>>" in doc or "::" in doc


def test_every_public_name_has_a_docstring_with_an_example() -> None:
    missing = []
    for name, obj in public_callables():
        target = obj.__func__ if isinstance(obj, classmethod | staticmethod) else obj
        doc = inspect.getdoc(target) or ""
        if not has_example(doc):
            missing.append(name)
    assert missing == []
    assert has_example(inspect.getdoc(vars(mmipc.Reader)["read"]) or "")  # a slot, set per instance
