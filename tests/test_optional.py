"""A missing optional library is an error that names the extra to install (issue 12, point 10),
and the extras that name them exist in pyproject.toml."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import runstash
from runstash.optional import EXTRA


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import <module>`` fail as if it were not installed."""
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def test_to_arrow_and_to_polars_name_their_extra(
    store: runstash.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_bytes(b"x", kind="k")
    hide(monkeypatch, "pyarrow")
    with pytest.raises(ModuleNotFoundError, match=r"runstash\[arrow\]") as e:
        store.to_arrow()
    assert e.value.name == "pyarrow" and "to_arrow()" in str(e.value)
    with pytest.raises(ModuleNotFoundError, match=r"runstash\[arrow\]"):
        store.to_polars()  # polars is there, pyarrow is not
    hide(monkeypatch, "polars")
    with pytest.raises(ModuleNotFoundError, match=r"runstash\[polars\]"):
        store.to_polars()


def test_loading_an_npy_artifact_without_numpy_names_the_extra(
    fac: runstash.ArtifactFacade, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import io

    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    src = tmp_path / "a.npy"
    src.write_bytes(buf.getvalue())
    art = asyncio.run(fac.save(src, kind="array"))
    hide(monkeypatch, "numpy")
    with pytest.raises(ModuleNotFoundError, match=r"runstash\[numpy\]"):
        asyncio.run(fac.load_artifact(art.uri))


def test_the_extras_exist_and_install_what_they_name() -> None:
    meta = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    extras = meta["project"]["optional-dependencies"]
    for module, extra in EXTRA.items():
        assert any(req.startswith(module) for req in extras[extra]), (module, extra)
    assert set(EXTRA.values()) <= {e for r in extras["all"] for e in r[9:-1].split(",")}
