"""Every write of a named file records a guessed mime, the same way on the sync and the facade
API, so that what the sync API writes decodes through the facade (issue 12, point 9)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import runstash
from runstash import mime
from tests.facade_helpers import run

pytestmark = pytest.mark.both_backends


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_sync_writer_records_the_extensions_mime_and_the_facade_decodes_it(
    store: runstash.Store, fac: runstash.ArtifactFacade
) -> None:
    arr = np.arange(6.0).reshape(2, 3)
    with store.writer(".npy", kind="array") as w:
        np.save(w, arr)
    a = w.artifact
    assert a is not None and a.mime == "application/x-npy"
    np.testing.assert_array_equal(run(fac.load_artifact(a.uri)), arr)

    # The facade's writer records the same mime for the same extension.
    async def via_facade() -> runstash.Artifact:
        async with fac.writer(kind="array", planned_ext=".npy") as fw:
            fw.write(npy_bytes(arr + 1))
        assert fac.last_artifact is not None
        return fac.last_artifact

    assert run(via_facade()).mime == a.mime


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("m.npy", "application/x-npy"),
        ("t.parquet", "application/vnd.apache.parquet"),
        ("r.json", "application/json"),
        ("notes.txt", "text/plain"),
        ("w.pt", "application/octet-stream"),  # not mimetypes' "snesdev-page-table"
        ("noext", None),
    ],
)
def test_save_and_ingest_guess_from_the_name_like_the_facade(
    store: runstash.Store, fac: runstash.ArtifactFacade, tmp_path: Path, name: str, want: str | None
) -> None:
    src = tmp_path / name
    src.write_bytes(b"{}")
    assert mime.guess(name) == want
    assert store.save(src).mime == want
    assert run(fac.save(src, kind="file")).mime == want
    ext = Path(name).suffix
    staged = store.stage(ext)
    Path(staged).write_bytes(b"{}")
    assert store.ingest(staged).mime == want
    with store.writer(ext) as w:
        w.write(b"{}")
    assert w.artifact is not None and w.artifact.mime == want


def test_an_extension_without_its_dot_is_the_same_extension(
    store: runstash.Store, fac: runstash.ArtifactFacade
) -> None:
    with store.writer("npy") as w:
        w.write(npy_bytes(np.arange(2)))
    assert w.artifact is not None and w.artifact.mime == "application/x-npy"

    async def via_facade() -> runstash.Artifact:
        async with fac.writer(kind="image", planned_ext="png") as fw:
            fw.write(b"png")
        assert fac.last_artifact is not None
        return fac.last_artifact

    a = run(via_facade())
    assert a.mime == "image/png" and a.labels["filename"] == "image.png"


def test_an_explicit_mime_wins(store: runstash.Store, tmp_path: Path) -> None:
    src = tmp_path / "a.json"
    src.write_bytes(b"{}")
    assert store.save(src, mime="application/x-custom").mime == "application/x-custom"
    assert store.put_bytes(b"raw").mime is None, "bytes with no name get no guess"
