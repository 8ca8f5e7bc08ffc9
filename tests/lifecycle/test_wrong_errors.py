"""The right error for bad input (issue 10, items 11 and 12).

- A NUL byte in a path (``Store``, ``save``, ``hash_file``, ``ingest``): before the fix a
  ``StoreIOError: [Errno None] None``; now an InvalidArgumentError, and nothing is created.
- A negative ``limit``: before the fix ``ArtifactFacade.list(limit=-1)`` and
  ``.search(limit=-1)`` silently dropped the last artifact, and ``Store.list(limit=-1)`` raised
  OverflowError; now each is an InvalidArgumentError. ``limit=0`` returns an empty list.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import runstash
from tests.facade_helpers import run

# -- item 11: NUL bytes in paths -----------------------------------------------------------

NUL_CALLS: dict[str, Callable[[runstash.Store, Any], object]] = {
    "Store": lambda s, p: runstash.Store(p, durability="os"),
    "Store.save": lambda s, p: s.save(p),
    "hash_file": lambda s, p: runstash.hash_file(p),
    "hash_file-sha256": lambda s, p: runstash.hash_file(p, algo="sha256"),
    "Store.ingest": lambda s, p: s.ingest(p),
}


@pytest.mark.parametrize("form", ["str", "relative", "pathlike"])
@pytest.mark.parametrize("call", sorted(NUL_CALLS))
def test_nul_byte_in_a_path_is_invalid_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, form: str
) -> None:
    store = runstash.Store(tmp_path / "store", durability="os")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "a").write_bytes(b"a file whose name is a prefix of the bad path")
    path: Any = {
        "str": str(work / "a\x00b"),
        "relative": "a\x00b",
        "pathlike": work / "a\x00b",
    }[form]
    with pytest.raises(runstash.InvalidArgumentError):
        NUL_CALLS[call](store, path)
    assert sorted(os.listdir(work)) == ["a"], "something was created beside the bad path"
    assert store.count() == 0


# -- item 12: negative limits --------------------------------------------------------------


def _facade(tmp_path: Path) -> runstash.ArtifactFacade:
    store = runstash.Store(tmp_path / "store", durability="os")
    facade = runstash.ArtifactFacade(store, run_id="r1")
    for i in range(3):
        run(facade.save(_src(tmp_path, i), kind="k", metrics={"m": float(i)}))
    assert store.count() == 3
    return facade


def _src(tmp_path: Path, i: int) -> str:
    p = tmp_path / f"src{i}.txt"
    p.write_bytes(f"artifact {i}".encode())
    return str(p)


LIMITED: dict[str, Callable[[runstash.ArtifactFacade, int], list[runstash.Artifact]]] = {
    "ArtifactFacade.list": lambda f, n: run(f.list(limit=n)),
    "ArtifactFacade.search": lambda f, n: run(f.search(limit=n)),
    "ArtifactFacade.search-ranked": lambda f, n: run(f.search(metric="m", mode="max", limit=n)),
    "Store.list": lambda f, n: f.store.list(limit=n),
    "Store.search": lambda f, n: f.store.search(limit=n),
    "Store.search-ranked": lambda f, n: f.store.search(metric="m", mode="max", limit=n),
}


@pytest.mark.parametrize("limit", [-1, -3, -100])
@pytest.mark.parametrize("call", sorted(LIMITED))
def test_negative_limit_is_invalid_argument(tmp_path: Path, call: str, limit: int) -> None:
    facade = _facade(tmp_path)
    with pytest.raises(runstash.InvalidArgumentError):
        LIMITED[call](facade, limit)


@pytest.mark.parametrize("call", sorted(LIMITED))
def test_zero_limit_is_empty_and_none_is_all(tmp_path: Path, call: str) -> None:
    # A guard: this already held on the old code (0b72818); it keeps the fix for negative
    # limits from refusing 0 or changing the unlimited result.
    facade = _facade(tmp_path)
    assert LIMITED[call](facade, 0) == []
    assert len(LIMITED[call](facade, 2)) == 2
    assert len(LIMITED[call](facade, None)) == 3  # type: ignore[arg-type]
