"""Hard links and symlinks into the staging area are refused (issue 10, item 7).

Before the fix ``ingest()`` of a staged file that had been replaced by a hard link to a user's
file outside the store made the user's inode the blob: it was chmodded read-only, and later
edits by its owner changed an "immutable" blob. And a ``staging/`` that is a symlink to a
directory outside the store made ``stage()`` create files there and ``ingest()`` take files
from there. Now ``ingest()`` of a file whose link count is not 1 raises InvalidArgumentError
(the user's file keeps its bytes and mode, nothing is recorded), and ``stage()`` / ``ingest()``
through a symlinked ``staging/`` raise CorruptError without writing outside the store.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

import runstash
from tests.faults.helpers import tree, tree_diff

USER_BYTES = b"the user's own file, not the store's " * 10


def _blob_files(root: str | Path) -> list[Path]:
    return sorted(p for p in Path(root, "blobs").rglob("*") if p.is_file())


@pytest.mark.parametrize("size", ["packed", "blob-file"])
def test_ingest_of_a_hard_link_to_a_user_file_is_refused(tmp_path: Path, size: str) -> None:
    data = USER_BYTES if size == "packed" else USER_BYTES * 3000  # over 64 KiB
    user = tmp_path / "home" / "notes.txt"
    user.parent.mkdir()
    user.write_bytes(data)
    os.chmod(user, 0o640)
    store = runstash.Store(tmp_path / "store", durability="os")

    staged = store.stage(".txt")
    os.unlink(staged)
    os.link(user, staged)
    with pytest.raises(runstash.InvalidArgumentError):
        store.ingest(staged, kind="k")

    st = user.stat()
    assert user.read_bytes() == data
    assert stat.S_IMODE(st.st_mode) == 0o640, f"the user's file is now {oct(st.st_mode)}"
    assert store.count() == 0
    assert not store.exists(runstash.hash_bytes(data))
    assert _blob_files(store.root) == []
    # The user's file is still the user's to edit, and the store does not serve it.
    with open(user, "ab") as f:
        f.write(b"edited")
    assert not store.exists(runstash.hash_bytes(data + b"edited"))


def _store_with_symlinked_staging(tmp_path: Path) -> tuple[runstash.Store, Path]:
    store = runstash.Store(tmp_path / "store", durability="os")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "resident.txt").write_bytes(b"someone else's directory")
    staging = Path(store.root, "staging")
    shutil.rmtree(staging)
    os.symlink(outside, staging)
    return store, outside


def test_stage_into_a_symlinked_staging_dir_is_refused(tmp_path: Path) -> None:
    store, outside = _store_with_symlinked_staging(tmp_path)
    before = tree(outside)
    with pytest.raises(runstash.CorruptError):
        store.stage(".bin")
    assert tree_diff(before, tree(outside)) == [], "stage() wrote outside the store"


@pytest.mark.parametrize("size", ["packed", "blob-file"])
def test_ingest_through_a_symlinked_staging_dir_is_refused(tmp_path: Path, size: str) -> None:
    store, outside = _store_with_symlinked_staging(tmp_path)
    data = USER_BYTES if size == "packed" else USER_BYTES * 3000
    planted = outside / "planted.bin"
    planted.write_bytes(data)
    os.chmod(planted, 0o640)
    before = tree(outside)
    with pytest.raises(runstash.CorruptError):
        store.ingest(Path(store.root, "staging", "planted.bin"), kind="k")
    assert tree_diff(before, tree(outside)) == [], "ingest() took or changed an outside file"
    assert stat.S_IMODE(planted.stat().st_mode) == 0o640
    assert store.count() == 0
    assert not store.exists(runstash.hash_bytes(data))
