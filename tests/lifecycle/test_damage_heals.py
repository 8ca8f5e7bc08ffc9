"""Damaged blob files are quarantined, and writing the same bytes again heals them (issue 10,
item 3).

A blob file (pack_max=0, or a payload over the default 64 KiB pack_max) is damaged in place:
bytes flipped (same size) or truncated. Then:

- writing the same content again, by each write path (put_bytes, save, stage + ingest, a
  writer), returns a record that reads back right with ``verify=True``; the older record
  naming those bytes reads right too, and the damaged file has moved into
  ``<root>/quarantine/`` (before the fix the write deduplicated onto the damaged file, so the
  new acknowledged record raised CorruptError forever);
- a verified read (CorruptError), ``verify(ref)`` (False) and ``verify_report()`` (listed in
  ``.corrupt``) each move the damaged file into quarantine; afterwards
  ``verify_report().quarantined`` and ``stats().quarantined_*`` account for it, the live record
  is listed as missing (``intact`` False) until the bytes are written again, and then every
  record reads right and the report is intact (``ok`` stays False while quarantine holds
  files).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

import runstash

# -- damage --------------------------------------------------------------------------------


def _flip(path: Path) -> None:
    os.chmod(path, 0o644)
    n = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(n // 2)
        b = f.read(1)
        f.seek(n // 2)
        f.write(bytes([b[0] ^ 0x20]))


def _truncate(path: Path) -> None:
    os.chmod(path, 0o644)
    os.truncate(path, path.stat().st_size // 2)


DAMAGE: dict[str, Callable[[Path], None]] = {"flipped": _flip, "truncated": _truncate}


# -- write paths ---------------------------------------------------------------------------


def _put(store: runstash.Store, data: bytes, tmp: Path) -> runstash.Artifact:
    return store.put_bytes(data, kind="w")


def _save(store: runstash.Store, data: bytes, tmp: Path) -> runstash.Artifact:
    src = tmp / "src.bin"
    src.write_bytes(data)
    return store.save(src, kind="w")


def _ingest(store: runstash.Store, data: bytes, tmp: Path) -> runstash.Artifact:
    staged = store.stage(".bin")
    Path(staged).write_bytes(data)
    return store.ingest(staged, kind="w")


def _writer(store: runstash.Store, data: bytes, tmp: Path) -> runstash.Artifact:
    with store.writer(".bin", kind="w") as w:
        w.write(data[: len(data) // 3])
        w.write(data[len(data) // 3 :])
    assert w.artifact is not None
    return w.artifact


WRITES: dict[str, Callable[[runstash.Store, bytes, Path], runstash.Artifact]] = {
    "put_bytes": _put,
    "save": _save,
    "ingest": _ingest,
    "writer": _writer,
}

# Two ways a blob ends up as a file: pack_max=0 with a small payload, or the default pack_max
# with a payload over 64 KiB.
LAYOUTS = {"pack_max=0": (0, 20_000), "default-pack_max": (None, 100_000)}


def _store(tmp_path: Path, layout: str) -> tuple[runstash.Store, bytes]:
    pack_max, size = LAYOUTS[layout]
    kw = {} if pack_max is None else {"pack_max": pack_max}
    store = runstash.Store(tmp_path / "store", durability="os", **kw)
    return store, random.Random(size).randbytes(size)


def _quarantined(root: str | Path) -> list[Path]:
    q = Path(root, "quarantine")
    if not q.exists():
        return []
    return sorted(p for p in q.rglob("*") if p.is_file() and not p.is_symlink())


def _blob_file(store: runstash.Store, art: runstash.Artifact) -> Path:
    path = Path(store.path_of(art))
    assert path.is_file() and Path(store.root, "blobs") in path.parents
    return path


# -- a write of the same bytes heals -------------------------------------------------------


@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_writing_the_same_bytes_again_heals_a_damaged_blob(
    tmp_path: Path, layout: str, damage: str, write: str
) -> None:
    store, data = _store(tmp_path, layout)
    old = store.put_bytes(data, kind="first")
    path = _blob_file(store, old)
    DAMAGE[damage](path)
    damaged = path.read_bytes()
    assert damaged != data

    new = WRITES[write](store, data, tmp_path)
    assert new.hash == old.hash and new.id != old.id
    assert store.read_bytes(new, verify=True) == data
    assert store.read_bytes(old, verify=True) == data
    assert store.verify(new) is True
    assert path.read_bytes() == data, "the blob file still holds the damaged bytes"
    moved = _quarantined(store.root)
    assert [p.read_bytes() for p in moved] == [damaged], "the damaged file is not in quarantine/"
    # Another handle agrees.
    with runstash.Store(store.root, durability="os") as again:
        assert again.read_bytes(old, verify=True) == data
        assert again.read_bytes(new, verify=True) == data
        assert again.verify_report().intact


# -- detection quarantines -----------------------------------------------------------------


def _detect_by_verified_read(store: runstash.Store, art: runstash.Artifact) -> None:
    with pytest.raises(runstash.CorruptError):
        store.read_bytes(art, verify=True)


def _detect_by_verify_ref(store: runstash.Store, art: runstash.Artifact) -> None:
    assert store.verify(art) is False


def _detect_by_verify_report(store: runstash.Store, art: runstash.Artifact) -> None:
    report = store.verify_report()
    assert [c.hash for c in report.corrupt] == [art.hash]
    assert not report.intact


DETECT = {
    "read_bytes(verify=True)": _detect_by_verified_read,
    "verify(ref)": _detect_by_verify_ref,
    "verify_report()": _detect_by_verify_report,
}


@pytest.mark.parametrize("detect", sorted(DETECT))
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_detected_damage_is_quarantined_reported_and_healed(
    tmp_path: Path, damage: str, detect: str
) -> None:
    store, data = _store(tmp_path, "pack_max=0")
    other = store.put_bytes(b"an intact neighbour " * 1000, kind="other")
    art = store.put_bytes(data, kind="first")
    twin = store.put_bytes(data, kind="twin")  # a second record naming the same bytes
    path = _blob_file(store, art)
    DAMAGE[damage](path)
    damaged = path.read_bytes()

    DETECT[detect](store, art)
    assert not path.exists(), "the damaged file is still under blobs/"
    moved = _quarantined(store.root)
    assert [p.read_bytes() for p in moved] == [damaged]

    report = store.verify_report()
    # .path may be absolute or relative to the root; Path(root, absolute) is the absolute one.
    listed = [(q.hash, Path(store.root, q.path), q.size) for q in report.quarantined]
    assert listed == [(art.hash, moved[0], len(damaged))]
    assert [m.hash for m in report.missing] == [art.hash]
    assert set(report.missing[0].records) == {art.id, twin.id}
    assert report.corrupt == ()
    assert not report.intact and not report.ok
    stats = store.stats()
    assert stats.quarantined_files == 1
    assert stats.quarantined_bytes == len(damaged)
    assert stats.missing_blobs == 1
    assert store.read_bytes(other, verify=True) == b"an intact neighbour " * 1000

    # Writing the same bytes again heals every record that names them.
    healed = store.put_bytes(data, kind="again")
    for a in (art, twin, healed):
        assert store.read_bytes(a, verify=True) == data
        assert store.verify(a) is True
    report = store.verify_report()
    assert report.intact, report
    assert report.missing == () and report.corrupt == ()
    assert not report.ok, "quarantined files must keep .ok False"
    assert len(report.quarantined) == 1
    assert _quarantined(store.root) == moved
    with runstash.Store(store.root, durability="os") as again:
        assert again.read_bytes(twin, verify=True) == data
        assert again.verify_report().intact
