"""Every public method of the sync Store, the facade and the writer documents each of its
parameters (issue 12, point 13): ``help(Store.best)`` says what every filter, mode and limit
does and what it raises."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from runstash import ArtifactFacade, Store
from runstash.writer import ArtifactWriter


def public_methods(cls: type) -> list[tuple[str, Callable[..., Any]]]:
    out = []
    for name, fn in inspect.getmembers(cls):
        static = inspect.getattr_static(cls, name)
        if name.startswith("_") or isinstance(static, property) or not callable(fn):
            continue
        if not getattr(fn, "__module__", "").startswith("runstash"):
            continue  # inherited from io.BufferedWriter and the like
        out.append((name, fn))
    return out


CASES = [
    (cls.__name__, name, fn)
    for cls in (Store, ArtifactFacade, ArtifactWriter)
    for name, fn in public_methods(cls)
]


@pytest.mark.parametrize(("owner", "name", "fn"), CASES, ids=[f"{c}.{n}" for c, n, _ in CASES])
def test_every_parameter_is_documented(owner: str, name: str, fn: Callable[..., Any]) -> None:
    doc = inspect.getdoc(fn) or ""
    assert doc, f"{owner}.{name} has no docstring"
    params = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    missing = [p for p in params if f":param {p}:" not in doc]
    assert not missing, f"{owner}.{name} does not document {missing}"


def test_the_checker_sees_the_methods_that_matter() -> None:
    names = {f"{c}.{n}" for c, n, _ in CASES}
    assert {
        "Store.best",
        "Store.put_bytes",
        "ArtifactFacade.save",
        "ArtifactWriter.add_labels",
    } <= names
