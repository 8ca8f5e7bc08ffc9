"""The writer's add_labels / add_metrics (AetherGraph's writer has them, issue 12 point 4): on
the sync and the facade writer, on both backends, checked when called, applied at commit."""

from __future__ import annotations

import pytest

import runstash
from tests.facade_helpers import run

pytestmark = pytest.mark.both_backends


def test_sync_writer_adds_labels_and_metrics(store: runstash.Store) -> None:
    labels: dict[str, str | int | float | bool] = {"a": "1", "keep": True}
    with store.writer(".bin", kind="ckpt", labels=labels, metrics={"x": 1.0}) as w:
        w.write(b"weights")
        w.add_labels({"a": "2", "step": 7})  # "a" takes the new value
        w.add_metrics({"loss": 0.25, "x": 3})
    a = w.artifact
    assert a is not None
    assert a.labels == {"a": "2", "keep": True, "step": 7}
    assert a.metrics == {"x": 3.0, "loss": 0.25}
    assert store.best(kind="ckpt", metric="loss", mode="min", labels={"step": 7}) == a
    with pytest.raises(ValueError, match="closed"):
        w.add_labels({"late": "no"})
    assert store.get(a.id) == a, "a call after the commit changes nothing"


def test_bad_labels_or_metrics_fail_at_the_call_and_change_nothing(store: runstash.Store) -> None:
    with store.writer(kind="k") as w:
        w.write(b"x")
        with pytest.raises(runstash.InvalidArgumentError):
            w.add_metrics({"ok": 1.0, "bad": float("nan")})
        with pytest.raises(runstash.InvalidArgumentError):
            w.add_labels({"ok": "1", "bad": [1]})  # type: ignore[dict-item]
    assert w.artifact is not None
    assert w.artifact.labels == {} and w.artifact.metrics == {}


def test_an_aborted_writer_records_nothing(store: runstash.Store) -> None:
    before = store.count()
    with pytest.raises(RuntimeError), store.writer(kind="k") as w:
        w.add_labels({"a": "1"})
        raise RuntimeError("body failed")
    assert store.count() == before


def test_facade_writer_adds_labels_and_metrics(fac: runstash.ArtifactFacade) -> None:
    async def go() -> runstash.Artifact:
        async with fac.writer(kind="image", planned_ext=".png", labels={"t": "a"}) as w:
            w.write(b"png bytes")
            w.add_labels({"t": "b", "epoch": 3})
            w.add_metrics({"psnr": 31.5})
            with pytest.raises(runstash.InvalidArgumentError, match="run_id"):
                w.add_labels({"run_id": "another-run"})
        assert fac.last_artifact is not None
        return fac.last_artifact

    a = run(go())
    assert a.labels["t"] == "b" and a.labels["epoch"] == 3
    assert a.metrics == {"psnr": 31.5}
    assert a.run_id == fac.run_id and "run_id" not in a.labels
    assert run(fac.best(kind="image", metric="psnr", mode="max")) == a
