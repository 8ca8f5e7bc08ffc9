"""A blob file replaced by a symlink is damage; it is never followed (issue 10, item 8).

Before the fix a symlink under ``blobs/`` pointing at an outside file was served by a plain
``read_bytes``, ``open`` and ``path_of``, and ``verify_report().intact`` stayed True. Now a
plain read, ``open`` and ``path_of`` raise CorruptError, ``verify(ref)`` is False,
``verify_report()`` lists the entry in ``.corrupt`` (``intact`` False), and the outside file is
never changed. The outside file holds either other bytes or an exact copy of the blob's bytes:
a symlink is damage whatever it points at.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

import runstash

DATA = b"the stored blob's bytes " * 100
OUTSIDE = {
    "other-bytes": b"X" * len(DATA),
    "other-size": b"an outside file of another size",
    "same-bytes": DATA,
}


def _read(store: runstash.Store, art: runstash.Artifact) -> None:
    with pytest.raises(runstash.CorruptError):
        store.read_bytes(art)


def _open(store: runstash.Store, art: runstash.Artifact) -> None:
    with pytest.raises(runstash.CorruptError):
        with store.open(art) as f:
            f.read()


def _path_of(store: runstash.Store, art: runstash.Artifact) -> None:
    with pytest.raises(runstash.CorruptError):
        store.path_of(art)


def _verify(store: runstash.Store, art: runstash.Artifact) -> None:
    assert store.verify(art) is False


def _verify_report(store: runstash.Store, art: runstash.Artifact) -> None:
    report = store.verify_report()
    assert not report.intact, report
    assert [c.hash for c in report.corrupt] == [art.hash], report


CHECKS: dict[str, Callable[[runstash.Store, runstash.Artifact], None]] = {
    "read_bytes": _read,
    "open": _open,
    "path_of": _path_of,
    "verify(ref)": _verify,
    "verify_report": _verify_report,
}


@pytest.mark.parametrize("outside", sorted(OUTSIDE))
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_blob_symlink_is_damage(tmp_path: Path, check: str, outside: str) -> None:
    store = runstash.Store(tmp_path / "store", durability="os", pack_max=0)
    art = store.put_bytes(DATA, kind="k")
    blob = Path(store.path_of(art))
    target = tmp_path / "outside.bin"
    target.write_bytes(OUTSIDE[outside])
    os.chmod(target, 0o640)
    os.unlink(blob)
    os.symlink(target, blob)

    CHECKS[check](store, art)
    # A second handle (no cached state) sees the same.
    with runstash.Store(store.root, durability="os") as again:
        if blob.is_symlink():  # a check may have moved the entry aside (quarantine)
            with pytest.raises(runstash.CorruptError):
                again.read_bytes(art)
        else:
            with pytest.raises((runstash.NotFoundError, runstash.CorruptError)):
                again.read_bytes(art)
    assert target.read_bytes() == OUTSIDE[outside], "the outside file was changed"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640, "the outside file's mode was changed"
