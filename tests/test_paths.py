"""Invariant 4: nothing is written outside the store. `..`, absolute paths and symlinks that
lead out of the store are refused, and the refused call writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import runstash
from tests.conftest import staging_entries

#: Tests taking the ``store`` (or ``fac``) fixture run on a local and on an S3 store.
pytestmark = pytest.mark.both_backends


def test_ingest_refuses_files_outside_staging(store: runstash.Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("mine")
    dotted = Path(store.staging_dir, os.path.relpath(outside, store.staging_dir))  # ../../…
    for bad in (outside, dotted, "/etc/hostname"):
        with pytest.raises(runstash.InvalidArgumentError):
            store.ingest(bad)
    assert outside.read_text() == "mine", "a refused ingest must not move the caller's file"
    assert store.stats().disk_blobs == 0 and store.count() == 0


def test_ingest_refuses_symlink_escapes(store: runstash.Store, tmp_path: Path) -> None:
    target = tmp_path / "secret.txt"
    target.write_text("secret")
    link = Path(store.staging_dir, "link.txt")
    link.symlink_to(target)
    with pytest.raises(runstash.InvalidArgumentError, match="symlink"):
        store.ingest(link)
    assert target.read_text() == "secret"
    assert store.stats().disk_blobs == 0 and store.count() == 0
    # A symlinked staging subdirectory does not help either.
    d = Path(store.staging_dir, "sub")
    d.symlink_to(tmp_path)
    with pytest.raises(runstash.InvalidArgumentError):
        store.ingest(d / "secret.txt")
    assert target.exists()


@pytest.mark.parametrize("ext", ["../../evil", "/abs", "a/b", "a\\b", ".", "x y"])
def test_extensions_cannot_name_paths(store: runstash.Store, ext: str) -> None:
    with pytest.raises(runstash.InvalidArgumentError):
        store.stage(ext)
    with pytest.raises(runstash.InvalidArgumentError):
        with store.writer(ext=ext):
            pass
    assert staging_entries(store) == []


def test_write_atomic_does_not_follow_into_new_places(tmp_path: Path) -> None:
    # write_atomic writes exactly the path it is given: a temp beside it, then a rename.
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    runstash.write_atomic(link, b"new", durability="os")
    # The rename replaces the link itself; the file it pointed to is untouched.
    assert target.read_text() == "old"
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["link.txt", "real.txt"]
